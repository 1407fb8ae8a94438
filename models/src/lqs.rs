//! The DELT data scorer: a BERT-family encoder, mean pooling, and a linear head
//! (hidden -> 1), stored as a *scorer directory*:
//!
//! ```text
//! my-scorer/
//!   scorer.json        {"format": "delt-lqs-scorer", "version": 1,
//!                       "encoder": "../all-MiniLM-L6-v2",   // relative to this directory, or absolute
//!                       "encoder_fingerprint": "…",         // of the encoder it was trained on
//!                       "head": "head.safetensors", "hidden_size": 384, "max_tokens": 256,
//!                       "pooling": "mean", "training": {…}}  // free-form facts about the fit
//!   head.safetensors   weight: f32 [1, hidden_size], bias: f32 [1]
//! ```
//!
//! `delt lqs fit` writes it; the `lqs` plugin reads it.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::bert::TextEncoder;
use crate::error::required_file;
use crate::{ModelError, Result};

/// The `format` value of `scorer.json`.
pub const FORMAT: &str = "delt-lqs-scorer";
/// The `version` of `scorer.json` this code reads and writes.
pub const VERSION: u32 = 1;

/// `scorer.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScorerConfig {
    /// Always [`FORMAT`].
    pub format: String,
    /// Always [`VERSION`].
    pub version: u32,
    /// The encoder's Hugging Face directory, relative to the scorer directory or absolute.
    pub encoder: String,
    /// [`encoder_fingerprint`] of the encoder the head was fitted on.
    pub encoder_fingerprint: String,
    /// The head's safetensors file, relative to the scorer directory.
    pub head: String,
    /// Width of the encoder's embeddings.
    pub hidden_size: usize,
    /// Token limit the head was fitted with (texts are truncated to it).
    pub max_tokens: usize,
    /// Always `mean`.
    pub pooling: String,
    /// Facts about the fit (label source, validation correlation, ...).
    #[serde(default)]
    pub training: serde_json::Value,
}

/// Identifies an encoder by its `config.json` and the size of its weights: a head fitted on
/// one encoder is refused on another.
pub fn encoder_fingerprint(encoder_dir: &Path) -> Result<String> {
    let config = required_file(encoder_dir, "config.json", "BERT model")?;
    let weights = required_file(encoder_dir, "model.safetensors", "BERT model")?;
    let bytes = std::fs::read(&config).map_err(|e| ModelError::file(&config, e.to_string()))?;
    let size = std::fs::metadata(&weights)
        .map_err(|e| ModelError::file(&weights, e.to_string()))?
        .len();
    // FNV-1a: stable across builds and platforms, unlike std's hasher.
    let mut hash: u64 = 0xcbf29ce484222325;
    for b in bytes.iter().chain(&size.to_le_bytes()) {
        hash = (hash ^ u64::from(*b)).wrapping_mul(0x100000001b3);
    }
    Ok(format!("{hash:016x}"))
}

/// Encoder, pooling and head: text in, one score out.
pub struct LqsScorer {
    encoder: TextEncoder,
    /// `(hidden, 1)`.
    weight: Tensor,
    bias: f32,
}

impl LqsScorer {
    /// Loads the scorer directory `dir`. `max_tokens` overrides the one it was fitted with.
    pub fn load(dir: &Path, max_tokens: Option<usize>, device: &Device) -> Result<Self> {
        let config_path = required_file(dir, "scorer.json", "delt LQS scorer")?;
        let text = std::fs::read_to_string(&config_path)
            .map_err(|e| ModelError::file(&config_path, e.to_string()))?;
        let config: ScorerConfig = serde_json::from_str(&text)
            .map_err(|e| ModelError::file(&config_path, format!("not a delt scorer.json: {e}")))?;
        if config.format != FORMAT || config.version != VERSION {
            return Err(ModelError::file(
                &config_path,
                format!(
                    "format {} version {} is not {FORMAT} version {VERSION}",
                    config.format, config.version
                ),
            ));
        }
        let encoder_dir = resolve(dir, &config.encoder);
        let found = encoder_fingerprint(&encoder_dir)?;
        if found != config.encoder_fingerprint {
            return Err(ModelError::file(
                &config_path,
                format!(
                    "the head was fitted on another encoder (fingerprint {}, but {} has {found}): \
                     point \"encoder\" at the encoder it was fitted on, or fit it again",
                    config.encoder_fingerprint,
                    encoder_dir.display()
                ),
            ));
        }
        let head = required_file(dir, &config.head, "delt LQS scorer")?;
        Self::from_parts(
            &encoder_dir,
            &head,
            max_tokens.unwrap_or(config.max_tokens),
            device,
        )
    }

    /// An encoder directory and a head file, without a scorer directory.
    pub fn from_parts(
        encoder_dir: &Path,
        head: &Path,
        max_tokens: usize,
        device: &Device,
    ) -> Result<Self> {
        let encoder = TextEncoder::load(encoder_dir, max_tokens, device)?;
        let hidden = encoder.encoder.hidden_size();
        let (weight, bias) = load_head(head, hidden, device)?;
        Ok(Self {
            encoder,
            weight,
            bias,
        })
    }

    /// The encoder.
    pub fn encoder(&self) -> &TextEncoder {
        &self.encoder
    }

    /// One score per text, in input order.
    pub fn score(&self, texts: &[&str], batch_size: usize) -> Result<Vec<f32>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let embeddings = self.encoder.embed(texts, batch_size)?;
        let scores = (embeddings.matmul(&self.weight)? + f64::from(self.bias))?;
        Ok(scores.flatten_all()?.to_vec1::<f32>()?)
    }
}

fn resolve(dir: &Path, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        dir.join(p)
    }
}

/// Reads a head file: `weight` `[1, hidden]` and `bias` `[1]`. Returns the weight as
/// `(hidden, 1)`.
fn load_head(path: &Path, hidden: usize, device: &Device) -> Result<(Tensor, f32)> {
    let tensors = candle_core::safetensors::load(path, device)
        .map_err(|e| ModelError::file(path, format!("not a safetensors head file: {e}")))?;
    let get = |name: &str| {
        tensors.get(name).ok_or_else(|| {
            ModelError::file(
                path,
                format!("no tensor '{name}': a head holds 'weight' [1, hidden] and 'bias' [1]"),
            )
        })
    };
    let weight = get("weight")?.to_dtype(DType::F32)?;
    if weight.dims() != [1, hidden] {
        return Err(ModelError::file(
            path,
            format!(
                "head weight has shape {:?}, but the encoder's embeddings have {hidden} dimensions: \
                 the head belongs to another encoder",
                weight.dims()
            ),
        ));
    }
    let bias = get("bias")?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let [bias] = bias[..] else {
        return Err(ModelError::file(path, "head bias must hold one value"));
    };
    Ok((weight.t()?.contiguous()?, bias))
}

/// Writes a scorer directory: `scorer.json` and `head.safetensors` with `weight` and `bias`.
pub fn save(dir: &Path, config: &ScorerConfig, weight: &[f32], bias: f32) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| ModelError::file(dir, e.to_string()))?;
    if weight.len() != config.hidden_size {
        return Err(ModelError::Config(format!(
            "head has {} weights for hidden size {}",
            weight.len(),
            config.hidden_size
        )));
    }
    let head = dir.join(&config.head);
    let tensors = [
        (
            "weight",
            Tensor::from_slice(weight, (1, weight.len()), &Device::Cpu)?,
        ),
        ("bias", Tensor::from_slice(&[bias], 1, &Device::Cpu)?),
    ];
    candle_core::safetensors::save(&tensors.into_iter().collect(), &head)?;
    let json =
        serde_json::to_string_pretty(config).map_err(|e| ModelError::Config(e.to_string()))?;
    let path = dir.join("scorer.json");
    std::fs::write(&path, json + "\n").map_err(|e| ModelError::file(&path, e.to_string()))
}
