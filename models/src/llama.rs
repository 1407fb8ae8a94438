//! Llama-family causal language models, for scoring: the summed negative log-likelihood of
//! each document's tokens, from which perplexity follows.
//!
//! Two on-disk forms:
//! - a quantized GGUF file (llama.cpp's format; weights stay quantized, the tokenizer comes
//!   from the file's metadata), e.g. SmolLM2-135M-Instruct Q4_1;
//! - a Hugging Face directory (`config.json`, `*.safetensors`, `tokenizer.json`) with
//!   `LlamaForCausalLM` weight names: what delt's own trainer writes.
//!
//! Documents of a batch are right-padded: with a causal mask no real token attends to padding,
//! so a document scores the same alone or in any batch.
//!
//! On the CPU the forward pass and the output layer run in fused kernels (`cpu_forward`); on
//! a GPU they are composed from candle ops.

use std::fs::File;
use std::path::Path;

use candle_core::quantized::QMatMul;
use candle_core::quantized::gguf_file;
use candle_core::quantized::tokenizer::TokenizerFromGguf;
use candle_core::{DType, Device, Module, Tensor};
use serde::Deserialize;
use tokenizers::Tokenizer;

mod cpu_forward;

use crate::error::required_file;
use crate::tokenizer::TextTokenizer;
use crate::{ModelError, Result};

/// The shape of a Llama model (Hugging Face `LlamaConfig` field names).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct LlamaConfig {
    /// Must be `llama` when present.
    #[serde(default)]
    pub model_type: Option<String>,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the gated feed-forward block.
    pub intermediate_size: usize,
    /// Transformer blocks.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention); defaults to `num_attention_heads`.
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// RMS norm epsilon.
    #[serde(default = "default_rms_eps")]
    pub rms_norm_eps: f64,
    /// Rotary embedding base.
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    /// Longest sequence the model was trained for.
    #[serde(default = "default_positions")]
    pub max_position_embeddings: usize,
    /// Whether the output projection is the token embedding.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Rotary scaling variants are not supported; must be absent or null.
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
}

fn default_rms_eps() -> f64 {
    1e-6
}
fn default_rope_theta() -> f64 {
    10_000.0
}
fn default_positions() -> usize {
    2048
}

impl LlamaConfig {
    fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    fn check(&self, source: &Path) -> Result<()> {
        let unsupported = |what: String| {
            ModelError::file(
                source,
                format!("{what}: the loader supports plain Llama models only"),
            )
        };
        if let Some(t) = &self.model_type
            && t != "llama"
        {
            return Err(unsupported(format!("model_type '{t}' is not 'llama'")));
        }
        if self.rope_scaling.as_ref().is_some_and(|v| !v.is_null()) {
            return Err(unsupported("rope_scaling".into()));
        }
        let heads = self.num_attention_heads;
        if heads == 0
            || !self.hidden_size.is_multiple_of(heads)
            || self.kv_heads() == 0
            || !heads.is_multiple_of(self.kv_heads())
            || !self.head_dim().is_multiple_of(2)
        {
            return Err(unsupported(format!(
                "hidden_size {} with {heads} heads and {} key/value heads",
                self.hidden_size,
                self.kv_heads()
            )));
        }
        Ok(())
    }
}

struct Block {
    attention_norm: Tensor,
    q: QMatMul,
    k: QMatMul,
    v: QMatMul,
    o: QMatMul,
    ffn_norm: Tensor,
    gate: QMatMul,
    up: QMatMul,
    down: QMatMul,
}

/// Where the weights come from decides the rotary layout: llama.cpp permutes the query and
/// key rows so that GGUF models rotate interleaved pairs, Hugging Face models rotate halves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RopeLayout {
    Interleaved,
    Halves,
}

/// A Llama model ready to score token sequences.
pub struct LlamaModel {
    config: LlamaConfig,
    embedding: Tensor,
    blocks: Vec<Block>,
    norm: Tensor,
    lm_head: QMatMul,
    rope: RopeLayout,
    device: Device,
}

/// How quantized GGUF weights are multiplied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantized {
    /// Kept quantized; activations are quantized to 8 bits for the product, as llama.cpp
    /// does: small, within a fraction of a percent of the float result, but on the CPU an
    /// order of magnitude slower than float32 for whole documents (candle's quantized product
    /// is built for one token at a time).
    Keep,
    /// Dequantized to float32 at load: exact float arithmetic, several times the memory.
    Dequantize,
    /// [`Quantized::Dequantize`] on the CPU when the float32 weights take at most half the
    /// memory available (`MemAvailable` of `/proc/meminfo`), else [`Quantized::Keep`]; on a
    /// GPU, [`Quantized::Keep`] (candle's GPU kernels dequantize by themselves).
    Auto,
}

impl Quantized {
    /// The path [`Quantized::Auto`] takes for `float_bytes` of float32 weights with
    /// `available` bytes of free memory (`None`: unknown), and why, for a log line.
    pub fn resolve(
        self,
        float_bytes: u64,
        available: Option<u64>,
        device: &Device,
    ) -> (Self, String) {
        let gb = |b: u64| format!("{:.2} GB", b as f64 / 1e9);
        match self {
            Self::Keep => (self, "dequantize=false".into()),
            Self::Dequantize => (self, "dequantize=true".into()),
            Self::Auto if !device.is_cpu() => (
                Self::Keep,
                "on a GPU; dequantize=true forces float32".into(),
            ),
            Self::Auto => match available {
                Some(free) if float_bytes.saturating_mul(2) <= free => (
                    Self::Dequantize,
                    format!(
                        "{} of float32 weights, {} of memory available; dequantize=false keeps them quantized",
                        gb(float_bytes),
                        gb(free)
                    ),
                ),
                Some(free) => (
                    Self::Keep,
                    format!(
                        "{} of float32 weights would take more than half the {} available; dequantize=true forces float32",
                        gb(float_bytes),
                        gb(free)
                    ),
                ),
                None => (
                    Self::Keep,
                    "free memory unknown (no /proc/meminfo); dequantize=true forces float32".into(),
                ),
            },
        }
    }
}

/// `MemAvailable` of `/proc/meminfo` in bytes; `None` where there is none (not Linux).
pub fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// A model with the tokenizer it was trained with.
pub struct LanguageModel {
    /// The model.
    pub model: LlamaModel,
    /// Its tokenizer, truncating to the chosen maximum.
    pub tokenizer: TextTokenizer,
    /// How the weights are multiplied and why, one line for the log: e.g. `GGUF weights
    /// dequantized to float32 at load (...)`.
    pub weights: String,
}

/// The summed negative log-likelihood of a document's tokens, each predicted from the tokens
/// before it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenLoss {
    /// Sum of `-ln p(token | prefix)` in nats.
    pub nll: f64,
    /// Tokens predicted.
    pub tokens: usize,
}

impl TokenLoss {
    /// Mean NLL per predicted token.
    pub fn mean(&self) -> f64 {
        self.nll / self.tokens as f64
    }

    /// `exp(mean NLL)`.
    pub fn perplexity(&self) -> f64 {
        self.mean().exp()
    }
}

impl LlamaConfig {
    /// The shape of the small LMs delt trains (proxy LM, efficacy runs): multi-head
    /// attention, a SwiGLU block of about 8/3 the width, untied embeddings.
    pub fn small(
        vocab_size: usize,
        hidden: usize,
        layers: usize,
        heads: usize,
        positions: usize,
    ) -> Self {
        Self {
            model_type: Some("llama".into()),
            vocab_size,
            hidden_size: hidden,
            intermediate_size: hidden * 8 / 3 / 8 * 8,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            num_key_value_heads: Some(heads),
            rms_norm_eps: 1e-5,
            rope_theta: 10_000.0,
            max_position_embeddings: positions,
            tie_word_embeddings: false,
            rope_scaling: None,
        }
    }
}

/// Reads and checks `config.json` of a Hugging Face Llama directory.
pub(crate) fn read_config(dir: &Path) -> Result<LlamaConfig> {
    let config_path = required_file(dir, "config.json", "Llama model")?;
    let text = std::fs::read_to_string(&config_path)
        .map_err(|e| ModelError::file(&config_path, e.to_string()))?;
    let config: LlamaConfig = serde_json::from_str(&text)
        .map_err(|e| ModelError::file(&config_path, format!("not a Llama config.json: {e}")))?;
    config.check(&config_path)?;
    Ok(config)
}

impl LanguageModel {
    /// Loads a `.gguf` file or a Hugging Face directory; texts are truncated to `max_tokens`.
    /// GGUF weights are dequantized when they fit ([`Quantized::Auto`]).
    pub fn load(path: &Path, max_tokens: usize, device: &Device) -> Result<Self> {
        Self::load_with(path, max_tokens, Quantized::Auto, device)
    }

    /// As [`LanguageModel::load`], choosing how quantized GGUF weights are multiplied.
    pub fn load_with(
        path: &Path,
        max_tokens: usize,
        quantized: Quantized,
        device: &Device,
    ) -> Result<Self> {
        if path.is_dir() {
            Self::load_dir(path, max_tokens, device)
        } else if path.extension().is_some_and(|e| e == "gguf") {
            Self::load_gguf(path, max_tokens, quantized, device)
        } else if path.exists() {
            Err(ModelError::file(
                path,
                "not a model: give a .gguf file or a directory with config.json, *.safetensors and tokenizer.json",
            ))
        } else {
            Err(ModelError::file(path, "no such file or directory"))
        }
    }

    fn load_dir(dir: &Path, max_tokens: usize, device: &Device) -> Result<Self> {
        let config = read_config(dir)?;
        let tokenizer = required_file(dir, "tokenizer.json", "Llama model")?;
        let mut shards: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| ModelError::file(dir, e.to_string()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
            .collect();
        shards.sort();
        if shards.is_empty() {
            return Err(ModelError::file(
                dir,
                "missing: a Llama model directory needs *.safetensors weights",
            ));
        }
        // SAFETY: memory-mapped read-only; model files must not change while delt runs.
        let vb =
            unsafe { candle_nn::VarBuilder::from_mmaped_safetensors(&shards, DType::F32, device) }
                .map_err(|e| ModelError::file(dir, format!("unreadable safetensors: {e}")))?;
        let model = LlamaModel::from_var_builder(config, vb, device)
            .map_err(|e| ModelError::file(dir, format!("weights do not match config.json: {e}")))?;
        check_positions(&model.config, max_tokens, dir)?;
        // The tokenizer's own post-processor decides whether a BOS token starts each text.
        let tokenizer = TextTokenizer::from_file(&tokenizer, max_tokens, None)?;
        Ok(Self {
            model,
            tokenizer,
            weights: "float32 weights (safetensors)".into(),
        })
    }

    fn load_gguf(
        path: &Path,
        max_tokens: usize,
        quantized: Quantized,
        device: &Device,
    ) -> Result<Self> {
        let bad =
            |e: candle_core::Error| ModelError::file(path, format!("not a usable GGUF model: {e}"));
        let mut file = File::open(path).map_err(|e| ModelError::file(path, e.to_string()))?;
        let content = gguf_file::Content::read(&mut file).map_err(bad)?;
        let meta = |key: &str| content.metadata.get(key);
        let arch = meta("general.architecture")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_default();
        if arch != "llama" {
            return Err(ModelError::file(
                path,
                format!(
                    "architecture '{arch}' is not supported: the loader supports Llama-family GGUF models only"
                ),
            ));
        }
        let number = |key: &str| -> Result<f64> {
            let v = meta(key)
                .ok_or_else(|| ModelError::file(path, format!("GGUF metadata lacks {key}")))?;
            v.to_u32()
                .map(f64::from)
                .or_else(|_| v.to_f32().map(f64::from))
                .or_else(|_| v.to_u64().map(|x| x as f64))
                .map_err(bad)
        };
        let embedding_q = content
            .tensor(&mut file, "token_embd.weight", device)
            .map_err(bad)?;
        let config = LlamaConfig {
            model_type: Some("llama".into()),
            vocab_size: embedding_q.shape().dims()[0],
            hidden_size: number("llama.embedding_length")? as usize,
            intermediate_size: number("llama.feed_forward_length")? as usize,
            num_hidden_layers: number("llama.block_count")? as usize,
            num_attention_heads: number("llama.attention.head_count")? as usize,
            num_key_value_heads: Some(number("llama.attention.head_count_kv")? as usize),
            rms_norm_eps: number("llama.attention.layer_norm_rms_epsilon")?,
            rope_theta: number("llama.rope.freq_base").unwrap_or(10_000.0),
            max_position_embeddings: number("llama.context_length")? as usize,
            tie_word_embeddings: !content.tensor_infos.contains_key("output.weight"),
            rope_scaling: None,
        };
        config.check(path)?;
        let float_bytes: u64 = content
            .tensor_infos
            .values()
            .map(|t| t.shape.elem_count() as u64 * 4)
            .sum();
        let (quantized, why) = quantized.resolve(float_bytes, available_memory(), device);
        let dequantize = quantized == Quantized::Dequantize;
        let weights = if dequantize {
            format!("GGUF weights dequantized to float32 at load ({why})")
        } else {
            format!("GGUF weights kept quantized ({why})")
        };
        let matmul = |t: candle_core::quantized::QTensor| -> Result<QMatMul> {
            if dequantize {
                Ok(QMatMul::Tensor(t.dequantize(device).map_err(bad)?))
            } else {
                QMatMul::from_qtensor(t).map_err(bad)
            }
        };
        let mut qtensor = |name: &str| content.tensor(&mut file, name, device).map_err(bad);
        let mut blocks = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let mut q = |part: &str| -> Result<QMatMul> {
                matmul(qtensor(&format!("blk.{i}.{part}.weight"))?)
            };
            blocks.push(Block {
                q: q("attn_q")?,
                k: q("attn_k")?,
                v: q("attn_v")?,
                o: q("attn_output")?,
                gate: q("ffn_gate")?,
                up: q("ffn_up")?,
                down: q("ffn_down")?,
                attention_norm: qtensor(&format!("blk.{i}.attn_norm.weight"))?
                    .dequantize(device)
                    .map_err(bad)?,
                ffn_norm: qtensor(&format!("blk.{i}.ffn_norm.weight"))?
                    .dequantize(device)
                    .map_err(bad)?,
            });
        }
        let norm = qtensor("output_norm.weight")?
            .dequantize(device)
            .map_err(bad)?;
        let embedding = embedding_q.dequantize(device).map_err(bad)?;
        let lm_head = if config.tie_word_embeddings && dequantize {
            QMatMul::Tensor(embedding.clone())
        } else if config.tie_word_embeddings {
            matmul(embedding_q)?
        } else {
            matmul(qtensor("output.weight")?)?
        };
        let model = LlamaModel {
            config,
            embedding,
            blocks,
            norm,
            lm_head,
            rope: RopeLayout::Interleaved,
            device: device.clone(),
        };
        check_positions(&model.config, max_tokens, path)?;
        let tokenizer =
            gguf_tokenizer(&content).map_err(|e| ModelError::file(path, e.to_string()))?;
        let add_bos = meta("tokenizer.ggml.add_bos_token")
            .and_then(|v| v.to_bool().ok())
            .unwrap_or(false);
        let bos = meta("tokenizer.ggml.bos_token_id").and_then(|v| v.to_u32().ok());
        let tokenizer = TextTokenizer::new(tokenizer, max_tokens, bos.filter(|_| add_bos))?;
        Ok(Self {
            model,
            tokenizer,
            weights,
        })
    }

    /// The token loss of each text, in input order; `None` for a text with no token to
    /// predict (empty, or one token and no BOS). Batches are length-sorted, at most
    /// `batch_size` documents each; the next chunk of texts is tokenized while the model runs
    /// ([`crate::pipeline`]).
    pub fn token_losses(
        &self,
        texts: &[&str],
        batch_size: usize,
    ) -> Result<Vec<Option<TokenLoss>>> {
        let budget = batch_size.max(1) * self.tokenizer.max_tokens();
        crate::pipeline::pipelined(
            texts,
            crate::pipeline::chunk_docs(batch_size),
            |part| self.tokenizer.encode(part),
            |ids| {
                let lengths: Vec<usize> = ids.iter().map(Vec::len).collect();
                let mut out = vec![None; ids.len()];
                for batch in crate::batching::length_batches(&lengths, batch_size, budget) {
                    let seqs: Vec<&[u32]> = batch.iter().map(|&i| ids[i].as_slice()).collect();
                    for (loss, &i) in self.model.token_losses(&seqs)?.into_iter().zip(&batch) {
                        out[i] = loss;
                    }
                }
                Ok(out)
            },
        )
    }
}

fn check_positions(config: &LlamaConfig, max_tokens: usize, source: &Path) -> Result<()> {
    if max_tokens > config.max_position_embeddings {
        return Err(ModelError::file(
            source,
            format!(
                "max_tokens {max_tokens} exceeds the model's {} positions",
                config.max_position_embeddings
            ),
        ));
    }
    Ok(())
}

/// The byte-level BPE tokenizer stored in GGUF metadata. candle builds vocabulary, merges and
/// special tokens; the pre-tokenizer is set to match the original Hugging Face tokenizer
/// (no prefix space unless the file asks for one; `smollm` splits digits one by one).
pub(crate) fn gguf_tokenizer(content: &gguf_file::Content) -> candle_core::Result<Tokenizer> {
    use tokenizers::pre_tokenizers::{byte_level::ByteLevel, digits::Digits, sequence::Sequence};
    let mut tokenizer = Tokenizer::from_gguf(content)?;
    let string = |key: &str| {
        content
            .metadata
            .get(key)
            .and_then(|v| v.to_string().ok())
            .cloned()
    };
    let prefix_space = content
        .metadata
        .get("tokenizer.ggml.add_space_prefix")
        .and_then(|v| v.to_bool().ok())
        .unwrap_or(false);
    let byte_level = ByteLevel::new(prefix_space, true, true);
    match string("tokenizer.ggml.pre").as_deref() {
        Some("smollm") => {
            tokenizer.with_pre_tokenizer(Some(Sequence::new(vec![
                Digits::new(true).into(),
                byte_level.into(),
            ])));
        }
        Some("gpt2") | Some("default") | None => {
            tokenizer.with_pre_tokenizer(Some(byte_level));
        }
        Some(_) => {}
    }
    Ok(tokenizer)
}

impl LlamaModel {
    /// Builds the model from weights with Hugging Face `LlamaForCausalLM` names.
    pub fn from_var_builder(
        config: LlamaConfig,
        vb: candle_nn::VarBuilder,
        device: &Device,
    ) -> Result<Self> {
        let (h, i) = (config.hidden_size, config.intermediate_size);
        let (heads, kv) = (config.num_attention_heads, config.kv_heads());
        let d = config.head_dim();
        let linear = |vb: &candle_nn::VarBuilder, out: usize, inp: usize| -> Result<QMatMul> {
            Ok(QMatMul::Tensor(vb.get((out, inp), "weight")?))
        };
        let m = vb.pp("model");
        let mut blocks = Vec::with_capacity(config.num_hidden_layers);
        for l in 0..config.num_hidden_layers {
            let b = m.pp(format!("layers.{l}"));
            let attn = b.pp("self_attn");
            let mlp = b.pp("mlp");
            blocks.push(Block {
                attention_norm: b.pp("input_layernorm").get(h, "weight")?,
                q: linear(&attn.pp("q_proj"), heads * d, h)?,
                k: linear(&attn.pp("k_proj"), kv * d, h)?,
                v: linear(&attn.pp("v_proj"), kv * d, h)?,
                o: linear(&attn.pp("o_proj"), h, heads * d)?,
                ffn_norm: b.pp("post_attention_layernorm").get(h, "weight")?,
                gate: linear(&mlp.pp("gate_proj"), i, h)?,
                up: linear(&mlp.pp("up_proj"), i, h)?,
                down: linear(&mlp.pp("down_proj"), h, i)?,
            });
        }
        let embedding = m.pp("embed_tokens").get((config.vocab_size, h), "weight")?;
        let lm_head = if config.tie_word_embeddings && !vb.contains_tensor("lm_head.weight") {
            QMatMul::Tensor(embedding.clone())
        } else {
            linear(&vb.pp("lm_head"), config.vocab_size, h)?
        };
        Ok(Self {
            norm: m.pp("norm").get(h, "weight")?,
            config,
            embedding,
            blocks,
            lm_head,
            rope: RopeLayout::Halves,
            device: device.clone(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// Final hidden states `(batch, seq, hidden)` of right-padded `ids` `(batch, seq)`.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        if !self.device.is_cpu() {
            return self.forward_composed(ids);
        }
        let (batch, seq) = ids.dims2()?;
        let flat = ids.flatten_all()?.to_vec1::<u32>()?;
        let hidden = cpu_forward::hidden_states(self, &flat, batch, seq)?;
        Ok(Tensor::from_vec(
            hidden,
            (batch, seq, self.config.hidden_size),
            &self.device,
        )?)
    }

    /// [`LlamaModel::forward`] composed from candle ops: the GPU path, and the CPU kernels'
    /// reference in tests.
    fn forward_composed(&self, ids: &Tensor) -> Result<Tensor> {
        let (_, seq) = ids.dims2()?;
        let (cos, sin) = self.rotary(seq)?;
        let mask = causal_mask(seq, &self.device)?;
        let mut x = self
            .embedding
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((ids.dim(0)?, seq, self.config.hidden_size))?;
        let eps = self.config.rms_norm_eps as f32;
        for block in &self.blocks {
            let normed = candle_nn::ops::rms_norm(&x, &block.attention_norm, eps)?;
            x = (self.attention(block, &normed, &cos, &sin, &mask)? + x)?;
            let normed = candle_nn::ops::rms_norm(&x, &block.ffn_norm, eps)?;
            let ff = (candle_nn::ops::silu(&block.gate.forward(&normed)?)?
                * block.up.forward(&normed)?)?;
            x = (block.down.forward(&ff)? + x)?;
        }
        Ok(candle_nn::ops::rms_norm(&x, &self.norm, eps)?)
    }

    fn rotary(&self, seq: usize) -> Result<(Tensor, Tensor)> {
        let half = self.config.head_dim() / 2;
        let theta = self.config.rope_theta;
        let inv: Vec<f32> = (0..half)
            .map(|i| (1.0 / theta.powf(2.0 * i as f64 / (2 * half) as f64)) as f32)
            .collect();
        let inv = Tensor::from_vec(inv, (1, half), &self.device)?;
        let positions = Tensor::arange(0u32, seq as u32, &self.device)?
            .to_dtype(DType::F32)?
            .reshape((seq, 1))?;
        let angles = positions.broadcast_mul(&inv)?;
        Ok((angles.cos()?, angles.sin()?))
    }

    fn attention(
        &self,
        b: &Block,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: &Tensor,
    ) -> Result<Tensor> {
        let (batch, seq, hidden) = x.dims3()?;
        let (heads, kv) = (self.config.num_attention_heads, self.config.kv_heads());
        let d = self.config.head_dim();
        let split = |t: Tensor, n: usize| -> Result<Tensor> {
            Ok(t.reshape((batch, seq, n, d))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let rope = |t: Tensor| -> Result<Tensor> {
            Ok(match self.rope {
                RopeLayout::Interleaved => candle_nn::rotary_emb::rope_i(&t, cos, sin)?,
                RopeLayout::Halves => candle_nn::rotary_emb::rope(&t, cos, sin)?,
            })
        };
        let q = rope(split(b.q.forward(x)?, heads)?)?;
        let k = rope(split(b.k.forward(x)?, kv)?)?;
        let v = split(b.v.forward(x)?, kv)?;
        let (k, v) = (repeat_kv(k, heads / kv)?, repeat_kv(v, heads / kv)?);
        let scores = (q.matmul(&k.t()?)? / (d as f64).sqrt())?.broadcast_add(mask)?;
        let weights = candle_nn::ops::softmax_last_dim(&scores)?;
        let out = weights
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((batch, seq, hidden))?;
        Ok(b.o.forward(&out)?)
    }

    /// The token loss of each sequence (`None` for fewer than two tokens).
    pub fn token_losses(&self, sequences: &[&[u32]]) -> Result<Vec<Option<TokenLoss>>> {
        let width = sequences.iter().map(|s| s.len()).max().unwrap_or(0);
        if width < 2 {
            return Ok(vec![None; sequences.len()]);
        }
        let mut ids = Vec::with_capacity(sequences.len() * width);
        for s in sequences {
            ids.extend_from_slice(s);
            ids.extend(std::iter::repeat_n(0u32, width - s.len()));
        }
        let loss = |s: &[u32], nll| {
            Some(TokenLoss {
                nll,
                tokens: s.len() - 1,
            })
        };
        if self.device.is_cpu() {
            let h = self.config.hidden_size;
            let hidden = cpu_forward::hidden_states(self, &ids, sequences.len(), width)?;
            return sequences
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    if s.len() < 2 {
                        return Ok(None);
                    }
                    let rows = &hidden[i * width * h..][..(s.len() - 1) * h];
                    Ok(loss(s, cpu_forward::target_nll(self, rows, &s[1..])?))
                })
                .collect();
        }
        let ids = Tensor::from_vec(ids, (sequences.len(), width), &self.device)?;
        let hidden = self.forward_composed(&ids)?;
        sequences
            .iter()
            .enumerate()
            .map(|(i, s)| {
                if s.len() < 2 {
                    return Ok(None);
                }
                // Logits one document at a time: a whole batch of vocabulary-wide rows is large.
                let h = hidden.get(i)?.narrow(0, 0, s.len() - 1)?;
                Ok(loss(s, self.composed_nll(&h, &s[1..])?))
            })
            .collect()
    }

    /// The summed `-ln p(target)` of positions with final hidden states `hidden`
    /// `(targets, hidden_size)`, through the output projection and candle ops.
    fn composed_nll(&self, hidden: &Tensor, targets: &[u32]) -> Result<f64> {
        let targets = Tensor::from_slice(targets, targets.len(), &self.device)?;
        let picked =
            crate::target_log_probs::target_log_probs(&self.lm_head.forward(hidden)?, &targets)?
                .to_dtype(DType::F64)?;
        Ok(-picked.sum_all()?.to_scalar::<f64>()?)
    }
}

fn repeat_kv(x: Tensor, times: usize) -> Result<Tensor> {
    if times == 1 {
        return Ok(x);
    }
    let (b, kv, s, d) = x.dims4()?;
    Ok(x.unsqueeze(2)?
        .expand((b, kv, times, s, d))?
        .reshape((b, kv * times, s, d))?)
}

fn causal_mask(seq: usize, device: &Device) -> Result<Tensor> {
    let mask: Vec<f32> = (0..seq)
        .flat_map(|i| (0..seq).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Ok(Tensor::from_vec(mask, (seq, seq), device)?)
}
