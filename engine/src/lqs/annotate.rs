//! `delt lqs annotate`: Learnability-Quality labels of proxy documents from a proxy LM's
//! training trajectory, written next to the documents as Parquet.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray, UInt32Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::parquet::arrow::ArrowWriter;
use delt_models::annotate::{AnnotateOptions, DocLabel, annotate};
use delt_models::candle_core::{DType, Device};
use delt_models::llama::LlamaConfig;
use delt_models::proxy_lm::ProxyLm;
use delt_models::tokenizer::{TextTokenizer, train_bpe};

use super::Texts;
use crate::DeltError;
use crate::progress::progress_bar;

type Result<T> = std::result::Result<T, DeltError>;

/// What `delt lqs annotate` needs besides the two inputs.
pub struct AnnotateJob {
    /// SGD steps, scoring interval, learning rate, batch size, seed.
    pub options: AnnotateOptions,
    /// Tokens kept per document.
    pub max_tokens: usize,
    /// A tokenizer.json to use; otherwise a byte-level BPE of `vocab_size` is trained on the proxy texts.
    pub tokenizer: Option<PathBuf>,
    /// Vocabulary of a trained tokenizer.
    pub vocab_size: usize,
    /// Width, depth and heads of the proxy LM.
    pub hidden: usize,
    /// Transformer blocks.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// A proxy LM directory delt saved before (config.json, model.safetensors,
    /// tokenizer.json) to start from instead of fresh weights; `hidden`, `layers`, `heads`
    /// and the tokenizer options then come from it.
    pub init_model: Option<PathBuf>,
    /// Where to save the proxy LM at the end of the trajectory (theta_T) and its tokenizer:
    /// a directory the perplexity plugin and `init_model` load.
    pub save_model: Option<PathBuf>,
    /// Show a progress bar.
    pub progress: bool,
}

/// What an annotation produced.
pub struct Annotated {
    /// One label per proxy document, in input order.
    pub labels: Vec<DocLabel>,
    /// Tokens of each proxy document.
    pub tokens: Vec<usize>,
    /// Proxy LM parameters.
    pub parameters: usize,
    /// Wall time of each stage (warm-up, trajectory, co-state, documents), in order.
    pub stage_seconds: Vec<(String, f64)>,
}

/// Labels the proxy documents.
pub fn annotate_texts(proxy: &Texts, target: &Texts, job: &AnnotateJob) -> Result<Annotated> {
    let tokenizer = match (&job.tokenizer, &job.init_model) {
        (Some(path), _) => TextTokenizer::from_file(path, job.max_tokens, None)?,
        (None, Some(dir)) => {
            TextTokenizer::from_file(&dir.join("tokenizer.json"), job.max_tokens, None)?
        }
        (None, None) => {
            let texts: Vec<&str> = proxy.texts.iter().map(String::as_str).collect();
            TextTokenizer::new(train_bpe(&texts, job.vocab_size)?, job.max_tokens, None)?
        }
    };
    let encode = |texts: &Texts, what: &str| -> Result<Vec<Vec<u32>>> {
        let refs: Vec<&str> = texts.texts.iter().map(String::as_str).collect();
        let ids = tokenizer.encode(&refs)?;
        if let Some(i) = ids.iter().position(|d| d.len() < 2) {
            return Err(DeltError::Config(format!(
                "{what} document {i} has fewer than two tokens ({:?}): remove empty and one-word documents first",
                texts.texts[i].chars().take(40).collect::<String>()
            )));
        }
        Ok(ids)
    };
    let (proxy_ids, target_ids) = (encode(proxy, "proxy")?, encode(target, "target")?);
    if target_ids.is_empty() {
        return Err(DeltError::Config(
            "the target set is empty: LQS needs target documents to aim at".into(),
        ));
    }
    let vocab = tokenizer.inner().get_vocab_size(true);
    let lm = match &job.init_model {
        Some(dir) => {
            let lm = ProxyLm::load(dir, DType::F32, &Device::Cpu)?;
            if lm.config().vocab_size < vocab {
                return Err(DeltError::Config(format!(
                    "{}: the model knows {} tokens, its tokenizer {vocab}: give the tokenizer it was trained with",
                    dir.display(),
                    lm.config().vocab_size
                )));
            }
            lm
        }
        None => {
            let config =
                LlamaConfig::small(vocab, job.hidden, job.layers, job.heads, job.max_tokens);
            ProxyLm::new(config, job.options.seed, DType::F32, &Device::Cpu)?
        }
    };
    let bar = progress_bar(job.progress);
    // A stage starts where the previous callback left off (its first unit of work runs
    // before its first callback).
    let mut stage_seconds: Vec<(String, f64)> = Vec::new();
    let (mut stage_started, mut last_call) = (Instant::now(), Instant::now());
    let labels = annotate(
        &lm,
        &proxy_ids,
        &target_ids,
        &job.options,
        &mut |stage, done, total| {
            if bar.length() != Some(total as u64) || bar.message() != stage {
                bar.set_message(stage.to_string());
                bar.set_length(total as u64);
            }
            let go_on = bar.set_position(done as u64);
            if stage_seconds.last().is_none_or(|(s, _)| s != stage) {
                stage_seconds.push((stage.to_string(), 0.0));
                stage_started = last_call;
            }
            last_call = Instant::now();
            if let Some(last) = stage_seconds.last_mut() {
                last.1 = (last_call - stage_started).as_secs_f64();
            }
            go_on
        },
    )?;
    bar.finish_and_clear();
    if let Some(dir) = &job.save_model {
        lm.save(dir)?;
        let path = dir.join("tokenizer.json");
        tokenizer
            .inner()
            .save(&path, false)
            .map_err(|e| DeltError::Config(format!("{}: {e}", path.display())))?;
    }
    Ok(Annotated {
        labels,
        tokens: proxy_ids.iter().map(Vec::len).collect(),
        parameters: lm.num_params(),
        stage_seconds,
    })
}

/// Writes the labels next to ids and texts as Parquet, atomically (temporary file, rename).
pub fn write_labels(
    path: &Path,
    proxy: &Texts,
    labels: &[DocLabel],
    tokens: &[usize],
) -> Result<()> {
    let column = |f: fn(&DocLabel) -> f64| {
        Arc::new(labels.iter().map(f).collect::<Float64Array>()) as ArrayRef
    };
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", proxy.ids.data_type().clone(), true),
        Field::new("text", DataType::Utf8, false),
        Field::new("gamma", DataType::Float64, false),
        Field::new("raw_gamma", DataType::Float64, false),
        Field::new("quality", DataType::Float64, false),
        Field::new("learnability", DataType::Float64, false),
        Field::new("reliability", DataType::Float64, false),
        Field::new("tokens", DataType::UInt32, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            proxy.ids.clone(),
            Arc::new(StringArray::from_iter_values(&proxy.texts)),
            column(|l| l.gamma),
            column(|l| l.raw_gamma),
            column(|l| l.quality),
            column(|l| l.learnability),
            column(|l| l.reliability),
            Arc::new(tokens.iter().map(|&t| t as u32).collect::<UInt32Array>()),
        ],
    )?;
    let tmp = path.with_extension("parquet.partial");
    let io = |e: std::io::Error| DeltError::Config(format!("{}: {e}", path.display()));
    let file = std::fs::File::create(&tmp).map_err(io)?;
    let mut writer = ArrowWriter::try_new(file, schema, None)?;
    writer.write(&batch)?;
    writer.close()?;
    std::fs::rename(&tmp, path).map_err(io)
}
