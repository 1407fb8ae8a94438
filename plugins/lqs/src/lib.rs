//! `lqs_score(text)`: the DELT data scorer as a delt plugin.
//!
//! A BERT-family encoder embeds each document (mean pooling over its real tokens) and a
//! linear head turns the embedding into one score, the learned Learnability-Quality Score.
//! The model comes from a scorer directory written by `delt lqs fit` (`scorer=<dir>`), or from
//! an encoder directory and a head file (`model=<dir>&head=<file>`). Runs on the CPU, or on a
//! GPU when built with the `cuda` feature.

use std::path::Path;

use delt_models::inference::{self, Inference};
use delt_models::lqs::LqsScorer;
use delt_plugin::arrow::array::ArrayRef;
use delt_plugin::{ArgType, FunctionSpec, Manifest, Options, Plugin, Scorer};

/// Token limit when neither the scorer directory nor the options give one.
const DEFAULT_MAX_TOKENS: usize = 256;

struct LqsScore {
    scorer: LqsScorer,
    inference: Inference,
}

impl Scorer for LqsScore {
    fn score(&mut self, args: &[ArrayRef]) -> Result<ArrayRef, String> {
        let batch = self.inference.forward_batch;
        delt_plugin::score_texts(&args[0], |texts| {
            let scores = self.inference.run(|| self.scorer.score(texts, batch));
            let scores = scores.map_err(|e| e.to_string())?;
            Ok(scores.into_iter().map(|s| Some(f64::from(s))).collect())
        })
    }
}

struct LqsPlugin;

impl Plugin for LqsPlugin {
    fn manifest() -> Manifest {
        let mut spec = FunctionSpec::new(
            "lqs_score",
            [ArgType::Text],
            ArgType::Float64,
            "The DELT data scorer's score of each document: encoder, mean pooling, linear head.",
        )
        .option(
            "scorer",
            "a scorer directory written by `delt lqs fit` (scorer.json + head)",
        )
        .option(
            "model",
            "instead of scorer: a BERT-family Hugging Face directory",
        )
        .option(
            "head",
            "with model: the head's safetensors file (weight [1, hidden], bias [1])",
        );
        for (name, doc) in inference::OPTIONS {
            spec = spec.option(name, doc);
        }
        Manifest::new("lqs", env!("CARGO_PKG_VERSION")).function(spec)
    }

    fn create(function: &str, options: &Options) -> Result<Box<dyn Scorer>, String> {
        let path = |name: &str| options.get(name).and_then(|v| v.as_str()).map(Path::new);
        let inference = Inference::from_options(options, function).map_err(|e| e.to_string())?;
        let scorer = match (path("scorer"), path("model"), path("head")) {
            (Some(dir), None, None) => LqsScorer::load(dir, inference.max_tokens, &inference.device),
            (None, Some(model), Some(head)) => LqsScorer::from_parts(
                model,
                head,
                inference.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
                &inference.device,
            ),
            _ => {
                return Err(format!(
                    "{function} needs scorer=<scorer directory>, or model=<encoder directory> and head=<head file>"
                ));
            }
        }
        .map_err(|e| e.to_string())?;
        Ok(Box::new(LqsScore { scorer, inference }))
    }
}

delt_plugin::export_plugin!(LqsPlugin);
