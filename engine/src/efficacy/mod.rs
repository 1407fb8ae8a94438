//! `delt bench efficacy`: does the curated order train a better model?
//!
//! Every arm is an SQL ordering or selection over the corpus, a `CREATE VIEW` in the arms
//! file, run by the real engine. For each seed and arm a small decoder-only LM
//! ([`delt_models::proxy_lm`]) starts from the seed's initialisation (the same for every arm:
//! paired seeds) and trains on the arm's documents in exactly the order a trainer would get
//! them: each arm is exported with `COPY ... STORED AS MEGATRON` (the tokenizer's start token,
//! then the text's tokens) and read back from the `.bin`/`.idx` files
//! ([`delt_models::train`]). Every arm trains on the same token budget, the tokens of one pass
//! over the training corpus (from `token_count`): an arm that keeps fewer documents repeats its
//! order (top 50% trains two epochs over its half), so selection is not confounded with seeing
//! fewer tokens. Documents are cut to `seq_len` tokens.
//! Losses are measured on the target set and on a held-out slice of the corpus that no arm
//! sees.
//!
//! Owns: the experiment (this module), `report` (the table, paired differences, JSON) and
//! `plot` (the PNG loss curves).
//! May import: `sql` (the [`Runner`] and `--param` values that run the arms), `io::training`,
//! `progress`, the models crate.

pub mod plot;
pub mod report;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{Array, AsArray, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{cast, concat_batches, take_record_batch};
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::{DFParser, Statement};
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;
use delt_models::ModelError;
use delt_models::candle_core::DType;
use delt_models::device::{DeviceRequest, auto_reason, describe};
use delt_models::llama::LlamaConfig;
use delt_models::proxy_lm::ProxyLm;
use delt_models::random::SplitMix64;
use delt_models::tokenizer::train_bpe;
use delt_models::train::{TrainOptions, train};
use serde_json::{Value, json};

use crate::io::training::megatron;
use crate::progress::progress_bar;
use crate::sql::params::Params;
use crate::sql::tokenize::DocumentTokenizer;
use crate::{DeltError, Runner};

type Result<T> = std::result::Result<T, DeltError>;

/// The shape of the LM every run trains.
#[derive(Debug, Clone)]
pub struct ModelShape {
    /// Width of the residual stream.
    pub hidden: usize,
    /// Transformer blocks.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// Vocabulary of the BPE tokenizer trained on the training corpus.
    pub vocab_size: usize,
    /// A tokenizer.json to use instead of training one.
    pub tokenizer: Option<PathBuf>,
    /// Documents are cut to this many tokens.
    pub seq_len: usize,
    /// Where the models train.
    pub device: DeviceRequest,
}

/// Everything `delt bench efficacy` needs.
pub struct EfficacyJob {
    /// The corpus (Parquet, JSON lines, CSV; local or S3); becomes table `corpus` minus the
    /// held-out slice.
    pub corpus: String,
    /// The target set, same formats.
    pub target: String,
    /// Column with the text, in the corpus, the target and every arm.
    pub text_column: String,
    /// SQL text of the arms file; each `CREATE VIEW` is an arm.
    pub arms_sql: String,
    /// Name of the arms file, for errors.
    pub arms_origin: String,
    /// Values for `${name}` in the arms file.
    pub params: Params,
    /// Share of the corpus held out for evaluation.
    pub heldout: f64,
    /// Training tokens per run (predicted positions); default: one pass over the training
    /// corpus.
    pub tokens: Option<usize>,
    /// Initialisation seeds; each seed trains every arm.
    pub seeds: Vec<u64>,
    /// The model.
    pub shape: ModelShape,
    /// Optimiser settings; `warmup_steps` and `eval_every` are set for each run from
    /// `warmup` and `evals`.
    pub train: TrainOptions,
    /// Evaluations per run.
    pub evals: usize,
    /// Share of each run's steps spent warming up.
    pub warmup: f64,
    /// The arm that paired differences compare against (default: the first).
    pub baseline: Option<String>,
    /// Show a progress bar.
    pub progress: bool,
}

/// One arm: its name and its documents in training order.
pub struct Arm {
    /// The view's name.
    pub name: String,
    /// Token ids of each document in the view's row order, as exported, cut to `seq_len`.
    pub documents: Vec<Vec<u32>>,
}

/// What an experiment works on, read and tokenized through the engine.
pub struct Inputs {
    /// Training corpus (the corpus minus the held-out slice), in file order.
    pub corpus: Vec<String>,
    /// The held-out slice, tokenized.
    pub heldout: Vec<Vec<u32>>,
    /// The target set, tokenized.
    pub target: Vec<Vec<u32>>,
    /// The arms, in the order of the arms file.
    pub arms: Vec<Arm>,
    /// Training tokens (predicted positions) of one pass over the training corpus.
    pub corpus_tokens: usize,
    /// The tokenizer's vocabulary size.
    pub vocab_size: usize,
}

/// One trained model.
#[derive(Debug, Clone)]
pub struct Run {
    /// Arm name.
    pub arm: String,
    /// Initialisation seed.
    pub seed: u64,
    /// Distinct documents of the arm.
    pub documents: usize,
    /// Optimiser steps.
    pub steps: usize,
    /// Training tokens (predicted positions) seen.
    pub tokens: usize,
    /// Final mean token loss on the target set.
    pub target_loss: f64,
    /// Final mean token loss on the held-out slice.
    pub heldout_loss: f64,
    /// (tokens seen, target loss, held-out loss) at every evaluation.
    pub curve: Vec<(usize, f64, f64)>,
    /// Training loss of every step.
    pub train_losses: Vec<f64>,
    /// Wall time of the run.
    pub seconds: f64,
}

/// Checks the `--param` values against the arms file, reads the corpus and target, registers
/// the training corpus as table `corpus`, trains the tokenizer (unless one is given), runs the
/// arms file and exports every arm, the held-out slice and the target set with
/// `COPY ... STORED AS MEGATRON`, reading the tokens back in order.
pub async fn read_inputs(ctx: &SessionContext, job: &EfficacyJob) -> Result<Inputs> {
    job.params.check_sources([job.arms_sql.as_str()])?;
    let read = |path: &str| format!("SELECT * FROM '{path}'");
    let corpus = collect(ctx, &read(&job.corpus), &job.corpus).await?;
    let schema = corpus
        .first()
        .map(|b| b.schema())
        .ok_or_else(|| DeltError::BadInput(format!("{}: the corpus is empty", job.corpus)))?;
    let all = concat_batches(&schema, &corpus)?;
    let (train_rows, heldout_rows) = split(all.num_rows(), job.heldout, job.seeds[0]);
    if train_rows.is_empty() || heldout_rows.is_empty() {
        return Err(DeltError::Config(format!(
            "{}: {} documents cannot be split into training and a held-out share of {}: give more documents or change --heldout",
            job.corpus,
            all.num_rows(),
            job.heldout
        )));
    }
    let rows = |idx: &[u32]| take_record_batch(&all, &UInt32Array::from(idx.to_vec()));
    let (train_batch, heldout_batch) = (rows(&train_rows)?, rows(&heldout_rows)?);
    let column = &job.text_column;
    let corpus = texts_of(&train_batch, column, &job.corpus)?;
    texts_of(&heldout_batch, column, &job.corpus)?;
    ctx.register_table(
        "corpus",
        Arc::new(MemTable::try_new(
            Arc::clone(&schema),
            vec![vec![train_batch]],
        )?),
    )?;
    ctx.register_table(
        HELDOUT_TABLE,
        Arc::new(MemTable::try_new(schema, vec![vec![heldout_batch]])?),
    )?;
    let target = collect(ctx, &read(&job.target), &job.target).await?;
    for batch in &target {
        texts_of(batch, column, &job.target)?;
    }
    let Some(target_schema) = target.first().map(|b| b.schema()) else {
        return Err(DeltError::BadInput(format!(
            "{}: the target set is empty",
            job.target
        )));
    };
    ctx.register_table(
        TARGET_TABLE,
        Arc::new(MemTable::try_new(target_schema, vec![target])?),
    )?;

    let scratch = tempfile::tempdir()
        .map_err(|e| DeltError::io("creating a temporary directory for the exports", e))?;
    let tokenizer = match &job.shape.tokenizer {
        Some(path) => path.clone(),
        None => {
            let texts: Vec<&str> = corpus.iter().map(String::as_str).collect();
            let path = scratch.path().join("tokenizer.json");
            train_bpe(&texts, job.shape.vocab_size)?
                .save(&path, false)
                .map_err(|e| DeltError::Config(format!("saving the trained tokenizer: {e}")))?;
            path
        }
    };
    let exporter = Exporter {
        ctx,
        dir: scratch.path(),
        tokenizer: &tokenizer,
        column,
        seq_len: job.shape.seq_len,
    };
    let heldout = exporter
        .documents(HELDOUT_TABLE, "the held-out slice")
        .await?;
    let target = exporter.documents(TARGET_TABLE, &job.target).await?;
    let corpus_tokens = exporter.corpus_tokens().await?;

    let names = arm_names(&job.params.bind(&job.arms_sql)?, &job.arms_origin)?;
    let mut runner = Runner::new(ctx.clone()).with_params(job.params.clone());
    runner.run_source(&job.arms_sql, &job.arms_origin).await?;
    let mut arms = Vec::with_capacity(names.len());
    for name in names {
        let what = format!("{}: arm {name}", job.arms_origin);
        let documents = exporter.documents(&name, &what).await?;
        if documents.is_empty() {
            return Err(DeltError::Config(format!("{what} has no documents")));
        }
        arms.push(Arm { name, documents });
    }
    if let Some(baseline) = job
        .baseline
        .as_ref()
        .filter(|b| !arms.iter().any(|a| &a.name == *b))
    {
        return Err(DeltError::Config(format!(
            "--baseline {baseline}: no such arm in {}",
            job.arms_origin
        )));
    }
    let vocab_size = DocumentTokenizer::shared(&tokenizer.to_string_lossy())?.vocab_size();
    Ok(Inputs {
        corpus,
        heldout,
        target,
        arms,
        corpus_tokens,
        vocab_size,
    })
}

/// The tables the held-out slice and the target set are exported from.
const HELDOUT_TABLE: &str = "delt_efficacy_heldout";
const TARGET_TABLE: &str = "delt_efficacy_target";

/// Exports tables and views the way a user would hand them to a trainer.
struct Exporter<'a> {
    ctx: &'a SessionContext,
    dir: &'a Path,
    tokenizer: &'a Path,
    column: &'a str,
    seq_len: usize,
}

impl Exporter<'_> {
    /// The documents of `table` in its row order: exported with `COPY ... STORED AS
    /// MEGATRON` (the start token, then the text's tokens), read back, cut to `seq_len`.
    async fn documents(&self, table: &str, what: &str) -> Result<Vec<Vec<u32>>> {
        let schema = self
            .ctx
            .table(table)
            .await
            .map_err(|e| DeltError::Config(format!("{what}: {}", DeltError::from(e))))?
            .schema()
            .clone();
        if schema.field_with_unqualified_name(self.column).is_err() {
            return Err(DeltError::Config(format!(
                "{what}: no column {}: pass --text-column or select it",
                self.column
            )));
        }
        let prefix = self.dir.join(table);
        let copy = format!(
            "COPY (SELECT \"{column}\" AS text FROM \"{table}\") TO '{}.bin' STORED AS MEGATRON \
             OPTIONS (tokenizer '{}', bos 'true', eos 'false', sidecar 'false')",
            prefix.display(),
            self.tokenizer.display(),
            column = self.column,
        );
        let mut runner = Runner::new(self.ctx.clone());
        runner
            .run_sql(&copy)
            .await
            .map_err(|e| DeltError::Config(format!("{what}: {e}")))?;
        let mut documents = megatron::read(&prefix)?;
        for document in &mut documents {
            document.truncate(self.seq_len);
        }
        Ok(documents)
    }

    /// Predicted positions of one pass over `corpus`: each document's start token and text
    /// tokens (`token_count`), cut to `seq_len`, less the first.
    async fn corpus_tokens(&self) -> Result<usize> {
        let sql = format!(
            "SELECT CAST(sum(least(token_count(\"{}\", '{}') + 1, {}) - 1) AS BIGINT) FROM corpus",
            self.column,
            self.tokenizer.display(),
            self.seq_len
        );
        let batches = self.ctx.sql(&sql).await?.collect().await?;
        let total = batches
            .first()
            .map(|b| b.column(0).as_primitive::<Int64Type>())
            .filter(|c| !c.is_empty() && !c.is_null(0))
            .map_or(0, |c| c.value(0));
        Ok(total.max(0) as usize)
    }
}

async fn collect(ctx: &SessionContext, sql: &str, path: &str) -> Result<Vec<RecordBatch>> {
    let read = async { ctx.sql(sql).await?.collect().await };
    read.await.map_err(|e| DeltError::reading(path, e))
}

/// The names of the views the arms file creates, in file order.
fn arm_names(sql: &str, origin: &str) -> Result<Vec<String>> {
    let statements = DFParser::parse_sql(sql)
        .map_err(|e| DeltError::Config(format!("{origin}: SQL syntax error: {e}")))?;
    let names: Vec<String> = statements
        .iter()
        .filter_map(|s| match s {
            Statement::Statement(s) => match s.as_ref() {
                SqlStatement::CreateView(view) => Some(view.name.to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect();
    if names.is_empty() {
        return Err(DeltError::Config(format!(
            "{origin}: no arms: write one `CREATE VIEW name AS SELECT text FROM corpus ORDER BY ...` per arm"
        )));
    }
    Ok(names)
}

/// Positions of the training rows and the held-out rows (a seeded sample), each ascending.
fn split(rows: usize, share: f64, seed: u64) -> (Vec<u32>, Vec<u32>) {
    let held = ((rows as f64) * share).round() as usize;
    let mut order: Vec<u32> = (0..rows as u32).collect();
    let mut rng = SplitMix64::new(seed ^ 0x4845_4c44);
    for i in (1..rows).rev() {
        order.swap(i, rng.below(i + 1));
    }
    let (mut heldout, mut train) = (order[..held].to_vec(), order[held..].to_vec());
    heldout.sort_unstable();
    train.sort_unstable();
    (train, heldout)
}

fn texts_of(batch: &RecordBatch, column: &str, what: &str) -> Result<Vec<String>> {
    let array = batch.column_by_name(column).ok_or_else(|| {
        DeltError::Config(format!(
            "{what}: no column {column}: pass --text-column or select it"
        ))
    })?;
    let array = cast(array, &DataType::Utf8)?;
    let strings = array.as_string::<i32>();
    (0..strings.len())
        .map(|row| {
            if strings.is_null(row) {
                Err(DeltError::BadInput(format!(
                    "{what}: row {row} has no {column}: remove NULL texts first"
                )))
            } else {
                Ok(strings.value(row).to_string())
            }
        })
        .collect()
}

/// Trains every arm with every seed (seed-major: each seed's arms run one after another);
/// returns the runs and the model's parameter count.
pub fn run_experiment(inputs: &Inputs, job: &EfficacyJob) -> Result<(Vec<Run>, usize)> {
    let shape = &job.shape;
    let predicted =
        |docs: &[Vec<u32>]| -> usize { docs.iter().map(|d| d.len().saturating_sub(1)).sum() };
    let budget = job.tokens.unwrap_or(inputs.corpus_tokens);
    let device = shape.device.open()?;
    if shape.device == DeviceRequest::Auto {
        eprintln!(
            "delt bench efficacy: training on {} ({})",
            describe(&device),
            auto_reason(&device)
        );
    }
    let (target, heldout) = (&inputs.target, &inputs.heldout);
    // Each arm's training stream: its documents in order, repeated until the budget is spent.
    let mut streams = Vec::with_capacity(inputs.arms.len());
    for arm in &inputs.arms {
        let docs: Vec<&Vec<u32>> = arm.documents.iter().filter(|d| d.len() >= 2).collect();
        if docs.is_empty() {
            return Err(DeltError::Config(format!(
                "arm {}: no document has two tokens to train on",
                arm.name
            )));
        }
        let mut stream = Vec::new();
        let mut tokens = 0;
        for doc in docs.iter().cycle() {
            if tokens >= budget {
                break;
            }
            tokens += doc.len() - 1;
            stream.push((*doc).clone());
        }
        streams.push((arm, docs.len(), stream));
    }
    let config = LlamaConfig::small(
        inputs.vocab_size,
        shape.hidden,
        shape.layers,
        shape.heads,
        shape.seq_len,
    );
    let steps_of = |stream: &[Vec<u32>]| stream.len().div_ceil(job.train.batch_size.max(1));
    let total: usize = streams.iter().map(|(_, _, s)| steps_of(s)).sum::<usize>() * job.seeds.len();
    let bar = progress_bar(job.progress);
    bar.set_length(total as u64);
    let mut runs = Vec::new();
    let mut done = 0;
    let mut parameters = 0;
    for &seed in &job.seeds {
        for (arm, documents, stream) in &streams {
            bar.set_message(format!(
                "{} seed {seed} (run {}/{})",
                arm.name,
                runs.len() + 1,
                streams.len() * job.seeds.len()
            ));
            let started = Instant::now();
            let lm = ProxyLm::new(config.clone(), seed, DType::F32, &device)?;
            parameters = lm.num_params();
            let mut options = job.train.clone();
            let steps = steps_of(stream);
            options.warmup_steps = ((steps as f64) * job.warmup).ceil() as usize;
            options.eval_every = steps.div_ceil(job.evals.max(1)).max(1);
            let refs: Vec<&[u32]> = stream.iter().map(Vec::as_slice).collect();
            let curve = train(&lm, &refs, &[target, heldout], &options, &mut |step, _| {
                bar.set_position((done + step) as u64)
            })
            .map_err(|e| match e {
                ModelError::Stopped => DeltError::Model(e),
                e => DeltError::Config(format!("arm {}, seed {seed}: {e}", arm.name)),
            })?;
            done += steps_of(stream);
            let last = curve.evals.last().map_or(&[][..], |e| e.losses.as_slice());
            runs.push(Run {
                arm: arm.name.clone(),
                seed,
                documents: *documents,
                steps: curve.train_losses.len(),
                tokens: predicted(stream),
                target_loss: last.first().copied().unwrap_or(f64::NAN),
                heldout_loss: last.get(1).copied().unwrap_or(f64::NAN),
                curve: curve
                    .evals
                    .iter()
                    .map(|e| (e.tokens, e.losses[0], e.losses[1]))
                    .collect(),
                train_losses: curve.train_losses,
                seconds: started.elapsed().as_secs_f64(),
            });
        }
    }
    bar.finish_and_clear();
    Ok((runs, parameters))
}

/// Every run and the settings as JSON (`results.json`).
pub fn runs_json(job: &EfficacyJob, inputs: &Inputs, runs: &[Run], params: usize) -> Value {
    let s = &job.shape;
    let t = &job.train;
    json!({
        "corpus": job.corpus, "target": job.target, "arms_file": job.arms_origin,
        "documents": {"train": inputs.corpus.len(), "heldout": inputs.heldout.len(), "target": inputs.target.len()},
        "model": {"hidden": s.hidden, "layers": s.layers, "heads": s.heads, "vocab_size": s.vocab_size,
                  "seq_len": s.seq_len, "parameters": params},
        "training": {"batch_size": t.batch_size, "lr": t.lr, "warmup": job.warmup,
                     "min_lr_ratio": t.min_lr_ratio, "weight_decay": t.weight_decay, "evals": job.evals},
        "seeds": job.seeds,
        "runs": runs.iter().map(|r| json!({
            "arm": r.arm, "seed": r.seed, "documents": r.documents, "steps": r.steps, "tokens": r.tokens,
            "target_loss": r.target_loss, "heldout_loss": r.heldout_loss, "seconds": r.seconds,
            "curve": r.curve.iter().map(|(tokens, target, heldout)| json!({
                "tokens": tokens, "target_loss": target, "heldout_loss": heldout})).collect::<Vec<_>>(),
            "train_losses": r.train_losses,
        })).collect::<Vec<_>>(),
    })
}

/// Writes `report.md`, `results.json`, `loss_curves.png` and `target_loss.png` into `out`,
/// atomically: a sibling temporary directory renamed over `out` once complete. `preamble`
/// (the command, the wall time) opens the report. Returns the Markdown table.
pub fn write_outputs(
    out: &Path,
    job: &EfficacyJob,
    inputs: &Inputs,
    runs: &[Run],
    parameters: usize,
    preamble: &str,
) -> Result<String> {
    let baseline = job
        .baseline
        .clone()
        .unwrap_or_else(|| inputs.arms[0].name.clone());
    let summaries = report::summarize(runs, &baseline);
    let table = report::markdown(&summaries, &baseline, job.seeds.len());
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let io = |what: &Path, e: std::io::Error| DeltError::Config(format!("{}: {e}", what.display()));
    std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
    let staging = tempfile::Builder::new()
        .prefix(".efficacy-")
        .tempdir_in(parent)
        .map_err(|e| io(parent, e))?;
    let dir = staging.path();
    let names: Vec<String> = inputs.arms.iter().map(|a| a.name.clone()).collect();
    plot::loss_curves(&dir.join("loss_curves.png"), runs, &names)?;
    plot::target_bars(&dir.join("target_loss.png"), &summaries)?;
    let json = runs_json(job, inputs, runs, parameters);
    let path = dir.join("results.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&json).unwrap_or_default(),
    )
    .map_err(|e| io(&path, e))?;
    let report = format!(
        "# Efficacy: {} arms x {} seeds\n\n{preamble}\n\n{table}\n\
         ![loss curves](loss_curves.png)\n\n![final target loss](target_loss.png)\n",
        inputs.arms.len(),
        job.seeds.len()
    );
    let path = dir.join("report.md");
    std::fs::write(&path, report).map_err(|e| io(&path, e))?;
    if out.exists() {
        std::fs::remove_dir_all(out).map_err(|e| io(out, e))?;
    }
    std::fs::rename(staging.keep(), out).map_err(|e| io(out, e))?;
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_out_rows_are_a_seeded_share_and_disjoint() {
        let (train, heldout) = split(100, 0.1, 3);
        assert_eq!((train.len(), heldout.len()), (90, 10));
        let mut all = [train.clone(), heldout.clone()].concat();
        all.sort_unstable();
        assert_eq!(all, (0..100).collect::<Vec<u32>>());
        assert_eq!(split(100, 0.1, 3), (train, heldout.clone()));
        assert_ne!(split(100, 0.1, 4).1, heldout);
    }

    #[test]
    fn arms_are_the_views_in_file_order() {
        let sql = "CREATE FUNCTION f(a VARCHAR) RETURNS DOUBLE LANGUAGE delt AS 'x';
                   CREATE TABLE s AS SELECT 1;
                   CREATE VIEW zeta AS SELECT text FROM corpus;
                   CREATE VIEW alpha AS SELECT text FROM corpus ORDER BY score;";
        assert_eq!(arm_names(sql, "arms.sql").unwrap(), vec!["zeta", "alpha"]);
        let err = arm_names("SELECT 1", "arms.sql").unwrap_err().to_string();
        assert!(err.contains("arms.sql: no arms"), "{err}");
    }
}
