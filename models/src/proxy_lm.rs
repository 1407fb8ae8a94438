//! A small Llama-architecture language model that can be trained and differentiated: the
//! proxy LM of LQS annotation and the model of the efficacy experiments.
//!
//! Every op here has a gradient. candle's fused kernels (`softmax_last_dim`, `rms_norm`,
//! `rope`, `layer_norm`) silently produce none, so this file composes softmax, RMS norm and
//! the rotary embedding from elementary ops; `tests/gradients.rs` checks the gradients
//! against central finite differences. Parameters are saved with Hugging Face
//! `LlamaForCausalLM` names, so the `perplexity` plugin and [`crate::llama`] load them.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{D, DType, Device, Tensor, Var};
use serde_json::json;

use crate::llama::LlamaConfig;
use crate::random::SplitMix64;
use crate::{ModelError, Result};

/// A trainable decoder-only transformer.
pub struct ProxyLm {
    config: LlamaConfig,
    /// Parameters in a fixed order (see [`ProxyLm::names`]).
    params: Vec<Var>,
    names: Vec<String>,
    device: Device,
    dtype: DType,
}

impl ProxyLm {
    /// A freshly initialised model: weights uniform with the variance of a normal of std
    /// 0.02 (GPT-2's), norms at 1; the same seed gives the same model.
    pub fn new(config: LlamaConfig, seed: u64, dtype: DType, device: &Device) -> Result<Self> {
        let mut names = Vec::new();
        let mut params = Vec::new();
        for (i, (name, dims)) in Self::shapes(&config).into_iter().enumerate() {
            let n: usize = dims.iter().product();
            let values: Vec<f64> = if name.ends_with("norm.weight") {
                vec![1.0; n]
            } else {
                // Uniform in [-a, a] has std a / sqrt(3).
                let a = 0.02 * 3f64.sqrt();
                let mut rng = SplitMix64::new(seed.wrapping_mul(1000).wrapping_add(i as u64));
                (0..n).map(|_| rng.symmetric() * a).collect()
            };
            let t = Tensor::from_vec(values, dims, device)?.to_dtype(dtype)?;
            params.push(Var::from_tensor(&t)?);
            names.push(name);
        }
        Ok(Self {
            config,
            params,
            names,
            device: device.clone(),
            dtype,
        })
    }

    /// Parameter names and shapes in the fixed order.
    fn shapes(c: &LlamaConfig) -> Vec<(String, Vec<usize>)> {
        let (h, i, v) = (c.hidden_size, c.intermediate_size, c.vocab_size);
        let d = h / c.num_attention_heads;
        let kv = c.num_key_value_heads.unwrap_or(c.num_attention_heads) * d;
        let mut shapes = vec![("model.embed_tokens.weight".to_string(), vec![v, h])];
        for l in 0..c.num_hidden_layers {
            let p = format!("model.layers.{l}");
            shapes.extend([
                (format!("{p}.input_layernorm.weight"), vec![h]),
                (format!("{p}.self_attn.q_proj.weight"), vec![h, h]),
                (format!("{p}.self_attn.k_proj.weight"), vec![kv, h]),
                (format!("{p}.self_attn.v_proj.weight"), vec![kv, h]),
                (format!("{p}.self_attn.o_proj.weight"), vec![h, h]),
                (format!("{p}.post_attention_layernorm.weight"), vec![h]),
                (format!("{p}.mlp.gate_proj.weight"), vec![i, h]),
                (format!("{p}.mlp.up_proj.weight"), vec![i, h]),
                (format!("{p}.mlp.down_proj.weight"), vec![h, i]),
            ]);
        }
        shapes.push(("model.norm.weight".to_string(), vec![h]));
        shapes.push(("lm_head.weight".to_string(), vec![v, h]));
        shapes
    }

    /// The configuration.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// Number of parameters.
    pub fn num_params(&self) -> usize {
        self.params.iter().map(|p| p.elem_count()).sum()
    }

    fn param(&self, name: &str) -> &Tensor {
        let i = self
            .names
            .iter()
            .position(|n| n == name)
            .expect("known parameter");
        self.params[i].as_tensor()
    }

    fn rms_norm(&self, x: &Tensor, weight: &str) -> Result<Tensor> {
        let eps = self.config.rms_norm_eps;
        let scale = (x.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?.recip()?;
        Ok(x.broadcast_mul(&scale)?.broadcast_mul(self.param(weight))?)
    }

    fn linear(&self, x: &Tensor, weight: &str) -> Result<Tensor> {
        Ok(x.broadcast_matmul(&self.param(weight).t()?)?)
    }

    /// Logits `(batch, seq, vocab)` of token ids `(batch, seq)` (right padding is harmless:
    /// attention is causal).
    pub fn logits(&self, ids: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        let (batch, seq) = ids.dims2()?;
        let (h, heads) = (c.hidden_size, c.num_attention_heads);
        let kv = c.num_key_value_heads.unwrap_or(heads);
        let d = h / heads;
        let (cos, sin) = self.rotary(seq)?;
        let mask: Vec<f64> = (0..seq)
            .flat_map(|i| (0..seq).map(move |j| if j > i { f64::NEG_INFINITY } else { 0.0 }))
            .collect();
        let mask = Tensor::from_vec(mask, (seq, seq), &self.device)?.to_dtype(self.dtype)?;
        let mut x = self
            .param("model.embed_tokens.weight")
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((batch, seq, h))?;
        for l in 0..c.num_hidden_layers {
            let p = format!("model.layers.{l}");
            let n = self.rms_norm(&x, &format!("{p}.input_layernorm.weight"))?;
            let split = |t: Tensor, k: usize| -> Result<Tensor> {
                Ok(t.reshape((batch, seq, k, d))?
                    .transpose(1, 2)?
                    .contiguous()?)
            };
            let q = rope(
                &split(
                    self.linear(&n, &format!("{p}.self_attn.q_proj.weight"))?,
                    heads,
                )?,
                &cos,
                &sin,
            )?;
            let k = rope(
                &split(
                    self.linear(&n, &format!("{p}.self_attn.k_proj.weight"))?,
                    kv,
                )?,
                &cos,
                &sin,
            )?;
            let v = split(
                self.linear(&n, &format!("{p}.self_attn.v_proj.weight"))?,
                kv,
            )?;
            let (k, v) = (repeat_kv(&k, heads / kv)?, repeat_kv(&v, heads / kv)?);
            let scores = (q.matmul(&k.t()?)? / (d as f64).sqrt())?.broadcast_add(&mask)?;
            let weights = candle_nn::ops::softmax(&scores, D::Minus1)?;
            let attended = weights
                .matmul(&v)?
                .transpose(1, 2)?
                .reshape((batch, seq, h))?;
            x = (x + self.linear(&attended, &format!("{p}.self_attn.o_proj.weight"))?)?;
            let n = self.rms_norm(&x, &format!("{p}.post_attention_layernorm.weight"))?;
            let gate = self
                .linear(&n, &format!("{p}.mlp.gate_proj.weight"))?
                .silu()?;
            let up = self.linear(&n, &format!("{p}.mlp.up_proj.weight"))?;
            x = (x + self.linear(&(gate * up)?, &format!("{p}.mlp.down_proj.weight"))?)?;
        }
        let x = self.rms_norm(&x, "model.norm.weight")?;
        self.linear(&x, "lm_head.weight")
    }

    fn rotary(&self, seq: usize) -> Result<(Tensor, Tensor)> {
        let half = self.config.hidden_size / self.config.num_attention_heads / 2;
        let theta = self.config.rope_theta;
        let angles: Vec<f64> = (0..seq)
            .flat_map(|t| {
                (0..half).map(move |i| t as f64 / theta.powf(2.0 * i as f64 / (2 * half) as f64))
            })
            .collect();
        let angles = Tensor::from_vec(angles, (seq, half), &self.device)?;
        Ok((
            angles.cos()?.to_dtype(self.dtype)?,
            angles.sin()?.to_dtype(self.dtype)?,
        ))
    }

    /// Mean token NLL of each sequence `(n,)`: token i+1 predicted from tokens 0..=i.
    /// Sequences need at least two tokens.
    pub fn sequence_losses(&self, sequences: &[&[u32]]) -> Result<Tensor> {
        let width = sequences.iter().map(|s| s.len()).max().unwrap_or(0);
        if sequences.is_empty() || sequences.iter().any(|s| s.len() < 2) {
            return Err(ModelError::Config(
                "every sequence needs at least two tokens to have a loss".into(),
            ));
        }
        let mut ids = Vec::with_capacity(sequences.len() * width);
        let mut targets = Vec::with_capacity(sequences.len() * (width - 1));
        let mut weights = Vec::with_capacity(sequences.len() * (width - 1));
        for s in sequences {
            ids.extend_from_slice(s);
            ids.extend(std::iter::repeat_n(0u32, width - s.len()));
            targets.extend_from_slice(&s[1..]);
            targets.extend(std::iter::repeat_n(0u32, width - s.len()));
            let w = 1.0 / (s.len() - 1) as f64;
            weights.extend(std::iter::repeat_n(w, s.len() - 1));
            weights.extend(std::iter::repeat_n(0.0, width - s.len()));
        }
        let n = sequences.len();
        let ids = Tensor::from_vec(ids, (n, width), &self.device)?;
        let logits = self.logits(&ids)?.narrow(1, 0, width - 1)?;
        let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
        let targets = Tensor::from_vec(targets, (n, width - 1, 1), &self.device)?;
        let picked = logp.gather(&targets, 2)?.squeeze(2)?;
        let weights =
            Tensor::from_vec(weights, (n, width - 1), &self.device)?.to_dtype(self.dtype)?;
        Ok((picked * weights)?.sum(1)?.neg()?)
    }

    /// Mean over sequences of their mean token NLL, a scalar to differentiate.
    pub fn loss(&self, sequences: &[&[u32]]) -> Result<Tensor> {
        Ok(self.sequence_losses(sequences)?.mean_all()?)
    }

    /// The gradient of a scalar `loss` with respect to all parameters, flattened in the
    /// fixed parameter order.
    pub fn gradient(&self, loss: &Tensor) -> Result<Vec<f64>> {
        let grads = loss.backward()?;
        let mut flat = Vec::with_capacity(self.num_params());
        for p in &self.params {
            match grads.get(p.as_tensor()) {
                Some(g) => flat.extend(g.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?),
                None => flat.extend(std::iter::repeat_n(0.0, p.elem_count())),
            }
        }
        Ok(flat)
    }

    /// All parameters, flattened in the fixed order.
    pub fn flat_params(&self) -> Result<Vec<f64>> {
        let mut flat = Vec::with_capacity(self.num_params());
        for p in &self.params {
            flat.extend(p.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?);
        }
        Ok(flat)
    }

    /// Replaces all parameters from a flat vector in the fixed order.
    pub fn set_flat_params(&self, flat: &[f64]) -> Result<()> {
        if flat.len() != self.num_params() {
            return Err(ModelError::Config(format!(
                "{} values for {} parameters",
                flat.len(),
                self.num_params()
            )));
        }
        let mut offset = 0;
        for p in &self.params {
            let n = p.elem_count();
            let t = Tensor::from_slice(&flat[offset..offset + n], p.shape(), &self.device)?
                .to_dtype(self.dtype)?;
            p.set(&t)?;
            offset += n;
        }
        Ok(())
    }

    /// Saves `config.json` and `model.safetensors` (float32) in Hugging Face Llama layout.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| ModelError::file(dir, e.to_string()))?;
        let c = &self.config;
        let config = json!({
            "architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "vocab_size": c.vocab_size, "hidden_size": c.hidden_size,
            "intermediate_size": c.intermediate_size, "num_hidden_layers": c.num_hidden_layers,
            "num_attention_heads": c.num_attention_heads,
            "num_key_value_heads": c.num_key_value_heads.unwrap_or(c.num_attention_heads),
            "rms_norm_eps": c.rms_norm_eps, "rope_theta": c.rope_theta,
            "max_position_embeddings": c.max_position_embeddings, "tie_word_embeddings": false
        });
        let path = dir.join("config.json");
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&config).unwrap_or_default(),
        )
        .map_err(|e| ModelError::file(&path, e.to_string()))?;
        let tensors: HashMap<String, Tensor> = self
            .names
            .iter()
            .zip(&self.params)
            .map(|(n, p)| Ok((n.clone(), p.as_tensor().to_dtype(DType::F32)?)))
            .collect::<Result<_>>()?;
        let path = dir.join("model.safetensors");
        candle_core::safetensors::save(&tensors, &path)
            .map_err(|e| ModelError::file(&path, e.to_string()))
    }
}

/// The rotary embedding on `(batch, heads, seq, head_dim)`, rotating halves (the Hugging Face
/// layout), from differentiable ops.
fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    let (x1, x2) = (
        x.narrow(D::Minus1, 0, d / 2)?,
        x.narrow(D::Minus1, d / 2, d / 2)?,
    );
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    let cos = Tensor::cat(&[cos, cos], D::Minus1)?;
    let sin = Tensor::cat(&[sin, sin], D::Minus1)?;
    Ok((x.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?)?)
}

fn repeat_kv(x: &Tensor, times: usize) -> Result<Tensor> {
    if times == 1 {
        return Ok(x.clone());
    }
    let (b, kv, s, d) = x.dims4()?;
    Ok(x.unsqueeze(2)?
        .expand((b, kv, times, s, d))?
        .reshape((b, kv * times, s, d))?)
}
