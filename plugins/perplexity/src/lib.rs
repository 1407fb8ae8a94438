//! `perplexity(text)` and `token_nll(text)`: how well a causal language model predicts each
//! document, as a delt plugin.
//!
//! `token_nll` is the mean negative log-likelihood per predicted token (nats), `perplexity`
//! its exponential. Each token is predicted from the tokens before it (after a BOS token when
//! the model's tokenizer adds one); a document with no token to predict scores NULL. The
//! model is a Llama-family LM from a GGUF file (quantized, e.g. SmolLM2) or a Hugging Face
//! directory (e.g. one delt trained). Runs on the CPU, or on a GPU when built with `cuda`.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Mutex;

use delt_models::inference::{self, Inference};
use delt_models::llama::{LanguageModel, Quantized, TokenLoss};
use delt_plugin::arrow::array::ArrayRef;
use delt_plugin::{ArgType, FunctionSpec, Manifest, Options, Plugin, Scorer};

/// Token limit unless the options give one.
const DEFAULT_MAX_TOKENS: usize = 512;

struct Perplexity {
    model: LanguageModel,
    inference: Inference,
    measure: fn(&TokenLoss) -> f64,
}

impl Scorer for Perplexity {
    fn score(&mut self, args: &[ArrayRef]) -> Result<ArrayRef, String> {
        let batch = self.inference.forward_batch;
        delt_plugin::score_texts(&args[0], |texts| {
            let losses = self.inference.run(|| self.model.token_losses(texts, batch));
            let losses = losses.map_err(|e| e.to_string())?;
            Ok(losses
                .iter()
                .map(|l| l.as_ref().map(self.measure))
                .collect())
        })
    }
}

/// Prints `line` on stderr unless this process printed it already: every instance (one per
/// concurrent partition) loads its own model, but one line says how they all run.
fn log_once(line: String) {
    static SEEN: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    if seen.insert(line.clone()) {
        eprintln!("{line}");
    }
}

struct PerplexityPlugin;

impl PerplexityPlugin {
    fn spec(name: &str, doc: &str) -> FunctionSpec {
        let mut spec = FunctionSpec::new(name, [ArgType::Text], ArgType::Float64, doc).option(
            "model",
            "a Llama-family model: a .gguf file, or a Hugging Face directory (config.json, *.safetensors, tokenizer.json)",
        )
        .option(
            "dequantize",
            "'true': dequantize GGUF weights to float32 at load (exact, fast on a CPU, several times the memory); 'false': keep them quantized (small, as llama.cpp); default: float32 on a CPU when the float weights take at most half the available memory, one stderr line says which",
        );
        for (option, doc) in inference::OPTIONS {
            spec = spec.option(option, doc);
        }
        spec
    }
}

impl Plugin for PerplexityPlugin {
    fn manifest() -> Manifest {
        Manifest::new("perplexity", env!("CARGO_PKG_VERSION"))
            .function(Self::spec(
                "perplexity",
                "Perplexity of each document under a causal LM: exp(mean token NLL).",
            ))
            .function(Self::spec(
                "token_nll",
                "Mean negative log-likelihood per predicted token of each document, in nats.",
            ))
    }

    fn create(function: &str, options: &Options) -> Result<Box<dyn Scorer>, String> {
        let model = options
            .get("model")
            .and_then(|v| v.as_str())
            .ok_or_else(|| format!("{function} needs model=<.gguf file or model directory>"))?;
        let inference = Inference::from_options(options, function).map_err(|e| e.to_string())?;
        let max_tokens = inference.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
        let quantized = match options.get("dequantize") {
            None => Quantized::Auto,
            Some(v) => match v.as_bool() {
                Some(false) => Quantized::Keep,
                Some(true) => Quantized::Dequantize,
                None => return Err(format!("option dequantize must be true or false, got {v}")),
            },
        };
        let model =
            LanguageModel::load_with(Path::new(model), max_tokens, quantized, &inference.device)
                .map_err(|e| e.to_string())?;
        log_once(format!("{function}: {}", model.weights));
        let measure: fn(&TokenLoss) -> f64 = match function {
            "perplexity" => TokenLoss::perplexity,
            _ => TokenLoss::mean,
        };
        Ok(Box::new(Perplexity {
            model,
            inference,
            measure,
        }))
    }
}

delt_plugin::export_plugin!(PerplexityPlugin);
