//! BERT-family encoders (BERT, MiniLM, ...) from a Hugging Face model directory
//! (`config.json`, `model.safetensors`, `tokenizer.json`), with mask-aware mean pooling.
//!
//! Post-layer-norm transformer encoder as in the original BERT: embeddings (word + position +
//! token type) and layer norm, then per layer self-attention and a GELU feed-forward block,
//! each followed by a residual connection and layer norm.

use std::path::Path;

use candle_core::{D, DType, Device, Module, Tensor};
use candle_nn::{Embedding, LayerNorm, Linear, VarBuilder};
use serde::Deserialize;

use crate::cpu_kernels;
use crate::error::required_file;
use crate::tokenizer::TextTokenizer;
use crate::{ModelError, Result};

/// The fields of a Hugging Face BERT `config.json` that the encoder uses.
#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    /// Must be `bert` (MiniLM and other BERT-architecture models say so too).
    #[serde(default)]
    pub model_type: Option<String>,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Width of the hidden states.
    pub hidden_size: usize,
    /// Transformer layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer.
    pub num_attention_heads: usize,
    /// Width of the feed-forward block.
    pub intermediate_size: usize,
    /// `gelu` (exact), `gelu_new` / `gelu_pytorch_tanh` (tanh approximation) or `relu`.
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Positions the model has embeddings for.
    pub max_position_embeddings: usize,
    /// Token type (segment) vocabulary.
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    /// Layer norm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// Only `absolute` is supported.
    #[serde(default)]
    pub position_embedding_type: Option<String>,
    /// Id of the padding token.
    #[serde(default)]
    pub pad_token_id: u32,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}

#[derive(Debug, Clone, Copy)]
enum Activation {
    GeluErf,
    GeluTanh,
    Relu,
}

impl BertConfig {
    /// Reads and checks `config.json`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ModelError::file(path, format!("cannot read: {e}")))?;
        let config: Self = serde_json::from_str(&text)
            .map_err(|e| ModelError::file(path, format!("not a BERT config.json: {e}")))?;
        let unsupported = |what: String| {
            ModelError::file(
                path,
                format!("{what}: the BERT loader supports BERT-architecture encoders only"),
            )
        };
        if let Some(t) = &config.model_type
            && t != "bert"
        {
            return Err(unsupported(format!("model_type '{t}' is not 'bert'")));
        }
        if let Some(p) = &config.position_embedding_type
            && p != "absolute"
        {
            return Err(unsupported(format!("position_embedding_type '{p}'")));
        }
        config
            .activation()
            .map_err(|e| unsupported(e.to_string()))?;
        if config.num_attention_heads == 0
            || !config
                .hidden_size
                .is_multiple_of(config.num_attention_heads)
        {
            return Err(unsupported(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                config.hidden_size, config.num_attention_heads
            )));
        }
        Ok(config)
    }

    fn activation(&self) -> Result<Activation> {
        match self.hidden_act.as_str() {
            "gelu" => Ok(Activation::GeluErf),
            "gelu_new" | "gelu_pytorch_tanh" => Ok(Activation::GeluTanh),
            "relu" => Ok(Activation::Relu),
            other => Err(ModelError::Config(format!("hidden_act '{other}'"))),
        }
    }
}

fn linear(vb: VarBuilder, in_dim: usize, out_dim: usize) -> Result<Linear> {
    Ok(candle_nn::linear(in_dim, out_dim, vb)?)
}

/// The bias of a linear layer; every linear layer of a BERT encoder has one.
fn bias(l: &Linear) -> candle_core::Result<&Tensor> {
    l.bias()
        .ok_or_else(|| candle_core::Error::Msg("a BERT linear layer without bias".into()))
}

fn layer_norm(vb: VarBuilder, size: usize, eps: f64) -> Result<LayerNorm> {
    Ok(candle_nn::layer_norm(size, eps, vb)?)
}

struct Layer {
    /// Query, key and value projections as one `(3 * hidden, hidden)` linear layer, the query
    /// rows scaled by 1/sqrt(head_dim) so that attention scores need no separate scaling.
    qkv: Linear,
    attention_out: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
}

impl Layer {
    fn load(vb: VarBuilder, c: &BertConfig) -> Result<Self> {
        let (h, i) = (c.hidden_size, c.intermediate_size);
        let attention = vb.pp("attention");
        let scale = 1.0 / ((h / c.num_attention_heads) as f64).sqrt();
        let query = linear(attention.pp("self.query"), h, h)?;
        let key = linear(attention.pp("self.key"), h, h)?;
        let value = linear(attention.pp("self.value"), h, h)?;
        let parts = [(query, scale), (key, 1.0), (value, 1.0)];
        let weights = parts
            .iter()
            .map(|(l, s)| l.weight() * *s)
            .collect::<candle_core::Result<Vec<_>>>()?;
        let biases = parts
            .iter()
            .map(|(l, s)| bias(l)? * *s)
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            qkv: Linear::new(Tensor::cat(&weights, 0)?, Some(Tensor::cat(&biases, 0)?)),
            attention_out: linear(attention.pp("output.dense"), h, h)?,
            attention_norm: layer_norm(attention.pp("output.LayerNorm"), h, c.layer_norm_eps)?,
            intermediate: linear(vb.pp("intermediate.dense"), h, i)?,
            output: linear(vb.pp("output.dense"), i, h)?,
            output_norm: layer_norm(vb.pp("output.LayerNorm"), h, c.layer_norm_eps)?,
        })
    }
}

/// A BERT-family encoder.
pub struct BertEncoder {
    config: BertConfig,
    activation: Activation,
    word: Embedding,
    position: Embedding,
    token_type: Embedding,
    embedding_norm: LayerNorm,
    layers: Vec<Layer>,
    device: Device,
    fused: bool,
}

impl BertEncoder {
    /// Loads `config.json` and `model.safetensors` from `dir` onto `device`.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let config = BertConfig::load(&required_file(dir, "config.json", "BERT model")?)?;
        let weights = required_file(dir, "model.safetensors", "BERT model")?;
        // SAFETY: the file is memory-mapped read-only; delt does not modify model files while
        // running and documents that others must not either.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, device) }
            .map_err(|e| ModelError::file(&weights, format!("not a safetensors file: {e}")))?;
        Self::from_var_builder(config, vb, device)
            .map_err(|e| ModelError::file(&weights, format!("does not match config.json: {e}")))
    }

    /// Builds the encoder from weights named as in Hugging Face's `BertModel` (with or
    /// without a leading `bert.`).
    pub fn from_var_builder(config: BertConfig, vb: VarBuilder, device: &Device) -> Result<Self> {
        let vb = if vb.contains_tensor("bert.embeddings.word_embeddings.weight") {
            vb.pp("bert")
        } else {
            vb
        };
        let c = &config;
        let emb = vb.pp("embeddings");
        let embedding = |name: &str, n: usize| -> Result<Embedding> {
            Ok(candle_nn::embedding(n, c.hidden_size, emb.pp(name))?)
        };
        let word = embedding("word_embeddings", c.vocab_size)?;
        let position = embedding("position_embeddings", c.max_position_embeddings)?;
        let token_type = embedding("token_type_embeddings", c.type_vocab_size)?;
        let embedding_norm = layer_norm(emb.pp("LayerNorm"), c.hidden_size, c.layer_norm_eps)?;
        let layers = (0..c.num_hidden_layers)
            .map(|i| Layer::load(vb.pp(format!("encoder.layer.{i}")), c))
            .collect::<Result<_>>()?;
        Ok(Self {
            activation: config.activation()?,
            config,
            word,
            position,
            token_type,
            embedding_norm,
            layers,
            fused: device.is_cpu(),
            device: device.clone(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// Width of an embedding.
    pub fn hidden_size(&self) -> usize {
        self.config.hidden_size
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Chooses between the fused CPU kernels of [`crate::cpu_kernels`] (the default on the
    /// CPU) and candle's composed ops (the only choice on other devices). Both compute the same
    /// function; tests compare them.
    pub fn use_fused_kernels(&mut self, fused: bool) {
        self.fused = fused && self.device.is_cpu();
    }

    /// Hidden states `(batch, seq, hidden)` of padded `ids` `(batch, seq)`; `mask` `(batch,
    /// seq)` is 1 for real tokens and 0 for padding.
    pub fn forward(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let seq = ids.dim(1)?;
        let positions = Tensor::arange(0u32, seq as u32, &self.device)?;
        let mut x = self
            .word
            .forward(ids)?
            .broadcast_add(&self.position.forward(&positions)?)?
            .broadcast_add(&self.token_type.forward(&Tensor::zeros(
                seq,
                DType::U32,
                &self.device,
            )?)?)?;
        x = self.embedding_norm.forward(&x)?;
        // Padding keys get a large negative bias: after softmax they weigh exactly zero. A
        // batch without padding needs none.
        let mask = mask.to_dtype(DType::F32)?;
        let padded = mask.elem_count() > 0 && mask.min_all()?.to_scalar::<f32>()? < 1.0;
        let key_bias = if padded {
            Some(((mask - 1.0)? * 1e9)?)
        } else {
            None
        };
        for layer in &self.layers {
            x = if self.fused {
                self.layer_fused(layer, &x, key_bias.as_ref())?
            } else {
                self.layer_composed(layer, &x, key_bias.as_ref())?
            };
        }
        Ok(x)
    }

    /// One layer from candle's ops: what runs on GPUs.
    fn layer_composed(&self, l: &Layer, x: &Tensor, key_bias: Option<&Tensor>) -> Result<Tensor> {
        let (batch, seq, hidden) = x.dims3()?;
        let heads = self.config.num_attention_heads;
        let head_dim = hidden / heads;
        let qkv = l.qkv.forward(x)?;
        let part = |i: usize| -> Result<Tensor> {
            Ok(qkv
                .narrow(2, i * hidden, hidden)?
                .reshape((batch, seq, heads, head_dim))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let (q, k, v) = (part(0)?, part(1)?, part(2)?);
        let mut scores = q.matmul(&k.t()?)?;
        if let Some(b) = key_bias {
            scores = scores.broadcast_add(&b.reshape((batch, 1, 1, seq))?)?;
        }
        let weights = candle_nn::ops::softmax_last_dim(&scores)?;
        let context = weights
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((batch, seq, hidden))?;
        let x = l
            .attention_norm
            .forward(&(l.attention_out.forward(&context)? + x)?)?;
        let h = self.activate(l.intermediate.forward(&x)?)?;
        Ok(l.output_norm.forward(&(l.output.forward(&h)? + x)?)?)
    }

    /// One layer from the fused CPU kernels: the same function in fewer passes.
    fn layer_fused(&self, l: &Layer, x: &Tensor, key_bias: Option<&Tensor>) -> Result<Tensor> {
        let heads = self.config.num_attention_heads;
        let qkv = cpu_kernels::linear(x, l.qkv.weight(), bias(&l.qkv)?)?;
        let context = cpu_kernels::attention(&qkv, heads, key_bias)?;
        let out = &l.attention_out;
        let x = cpu_kernels::linear_residual_norm(
            &context,
            out.weight(),
            bias(out)?,
            x,
            self.row_norm(&l.attention_norm)?,
        )?;
        let (up, down) = (&l.intermediate, &l.output);
        let h = match self.activation {
            Activation::GeluErf => cpu_kernels::linear_gelu(&x, up.weight(), bias(up)?)?,
            _ => self.activate(cpu_kernels::linear(&x, up.weight(), bias(up)?)?)?,
        };
        Ok(cpu_kernels::linear_residual_norm(
            &h,
            down.weight(),
            bias(down)?,
            &x,
            self.row_norm(&l.output_norm)?,
        )?)
    }

    /// A layer norm's parameters for the fused kernels (every BERT layer norm has a bias).
    fn row_norm<'a>(&self, norm: &'a LayerNorm) -> candle_core::Result<cpu_kernels::RowNorm<'a>> {
        let bias = norm
            .bias()
            .ok_or_else(|| candle_core::Error::Msg("a BERT layer norm without bias".into()))?;
        Ok(cpu_kernels::RowNorm {
            weight: norm.weight(),
            bias,
            eps: self.config.layer_norm_eps,
        })
    }

    fn activate(&self, h: Tensor) -> Result<Tensor> {
        Ok(match self.activation {
            Activation::GeluErf => h.gelu_erf()?,
            Activation::GeluTanh => h.gelu()?,
            Activation::Relu => h.relu()?,
        })
    }

    /// Mean-pooled embeddings `(batch, hidden)` of token id sequences of any lengths: the
    /// mean of the last hidden states over each sequence's real tokens.
    pub fn embed(&self, sequences: &[&[u32]]) -> Result<Tensor> {
        if sequences.is_empty() {
            let shape = (0, self.hidden_size());
            return Ok(Tensor::zeros(shape, DType::F32, &self.device)?);
        }
        let (ids, mask) = pad(sequences, self.config.pad_token_id, &self.device)?;
        let hidden = self.forward(&ids, &mask)?;
        mean_pool(&hidden, &mask)
    }
}

/// Right-pads `sequences` with `pad_id` into `(ids, mask)`, both `(batch, longest)`.
pub fn pad(sequences: &[&[u32]], pad_id: u32, device: &Device) -> Result<(Tensor, Tensor)> {
    let width = sequences.iter().map(|s| s.len()).max().unwrap_or(0).max(1);
    let mut ids = Vec::with_capacity(sequences.len() * width);
    let mut mask = Vec::with_capacity(sequences.len() * width);
    for s in sequences {
        ids.extend_from_slice(s);
        ids.extend(std::iter::repeat_n(pad_id, width - s.len()));
        mask.extend(std::iter::repeat_n(1f32, s.len()));
        mask.extend(std::iter::repeat_n(0f32, width - s.len()));
    }
    let shape = (sequences.len(), width);
    Ok((
        Tensor::from_vec(ids, shape, device)?,
        Tensor::from_vec(mask, shape, device)?,
    ))
}

/// Mean of `hidden` `(batch, seq, hidden)` over the positions where `mask` `(batch, seq)` is 1.
pub fn mean_pool(hidden: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let mask = mask.to_dtype(hidden.dtype())?.unsqueeze(D::Minus1)?;
    let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
    let counts = mask.sum(1)?.clamp(1e-9, f64::INFINITY)?;
    Ok(summed.broadcast_div(&counts)?)
}

/// A BERT encoder with its tokenizer: text in, mean-pooled embeddings out.
pub struct TextEncoder {
    /// The encoder.
    pub encoder: BertEncoder,
    /// Its tokenizer, truncating to the chosen maximum.
    pub tokenizer: TextTokenizer,
}

impl TextEncoder {
    /// Loads encoder and `tokenizer.json` from a Hugging Face directory; texts are truncated
    /// to `max_tokens` tokens ([CLS] and [SEP] included, at most the model's positions).
    pub fn load(dir: &Path, max_tokens: usize, device: &Device) -> Result<Self> {
        let encoder = BertEncoder::load(dir, device)?;
        let limit = encoder.config.max_position_embeddings;
        if max_tokens > limit {
            return Err(ModelError::Config(format!(
                "max_tokens {max_tokens} exceeds the {limit} positions of the encoder in {}",
                dir.display()
            )));
        }
        let tokenizer = TextTokenizer::from_file(
            &required_file(dir, "tokenizer.json", "BERT model")?,
            max_tokens,
            None,
        )?;
        Ok(Self { encoder, tokenizer })
    }

    /// Embeddings `(texts, hidden)` in input order, computed in length-sorted batches of at
    /// most `batch_size` texts; the next chunk of texts is tokenized while the encoder runs
    /// ([`crate::pipeline`]).
    pub fn embed(&self, texts: &[&str], batch_size: usize) -> Result<Tensor> {
        let rows = crate::pipeline::pipelined(
            texts,
            crate::pipeline::chunk_docs(batch_size),
            |part| self.tokenizer.encode(part),
            |ids| {
                let lengths: Vec<usize> = ids.iter().map(Vec::len).collect();
                let batches = crate::batching::length_batches(&lengths, batch_size, usize::MAX);
                let mut rows: Vec<Option<Tensor>> = vec![None; ids.len()];
                for batch in batches {
                    let seqs: Vec<&[u32]> = batch.iter().map(|&i| ids[i].as_slice()).collect();
                    let pooled = self.encoder.embed(&seqs)?;
                    for (j, &i) in batch.iter().enumerate() {
                        rows[i] = Some(pooled.get(j)?);
                    }
                }
                Ok(rows.into_iter().flatten().collect())
            },
        )?;
        if rows.is_empty() {
            return Ok(Tensor::zeros(
                (0, self.encoder.hidden_size()),
                DType::F32,
                self.encoder.device(),
            )?);
        }
        Ok(Tensor::stack(&rows, 0)?)
    }
}
