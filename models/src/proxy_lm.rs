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
use crate::target_log_probs::target_log_probs;
use crate::{ModelError, Result};

const EMBEDDING: &str = "model.embed_tokens.weight";

/// Per-sequence gradient statistics of one batch, in input order.
#[derive(Debug, Clone, PartialEq)]
pub struct SequenceGradients {
    /// ||grad loss(x_n)|| of each sequence.
    pub norms: Vec<f64>,
    /// direction . grad loss(x_n) (zeros without a direction).
    pub dots: Vec<f64>,
}

/// Where a parameter met the activations in a recorded forward pass; `probe` is a zero
/// variable added to the op's output, so its gradient is the gradient of that output.
enum Tap {
    /// `y = x W^T`.
    Linear {
        param: usize,
        input: Tensor,
        probe: Var,
    },
    /// `y = x * w`, elementwise over the last dimension.
    Scale {
        param: usize,
        input: Tensor,
        probe: Var,
    },
    /// `y = E[ids]`.
    Embedding {
        param: usize,
        ids: Tensor,
        probe: Var,
    },
}

/// `Some` while a forward pass records its taps.
type Taps = Option<Vec<Tap>>;

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
        let mut tensors = Vec::new();
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
            tensors.push((name, Tensor::from_vec(values, dims, device)?));
        }
        Self::from_tensors(config, tensors, dtype, device)
    }

    /// Loads a model that [`ProxyLm::save`] wrote (or any Hugging Face Llama directory
    /// with untied embeddings and one `model.safetensors`), to continue training it.
    pub fn load(dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let config = crate::llama::read_config(dir)?;
        if config.tie_word_embeddings {
            return Err(ModelError::file(
                dir,
                "tied word embeddings are not supported for training: give a model delt saved",
            ));
        }
        let path = crate::error::required_file(dir, "model.safetensors", "proxy LM")?;
        let mut stored = candle_core::safetensors::load(&path, device)
            .map_err(|e| ModelError::file(&path, format!("unreadable safetensors: {e}")))?;
        let mut tensors = Vec::new();
        for (name, dims) in Self::shapes(&config) {
            let t = stored.remove(&name).ok_or_else(|| {
                ModelError::file(
                    &path,
                    format!("missing tensor {name}: not a Llama checkpoint"),
                )
            })?;
            if t.dims() != dims.as_slice() {
                return Err(ModelError::file(
                    &path,
                    format!("{name} has shape {:?}, config.json says {dims:?}", t.dims()),
                ));
            }
            tensors.push((name, t));
        }
        Self::from_tensors(config, tensors, dtype, device)
    }

    /// The model of named tensors in the fixed order.
    fn from_tensors(
        config: LlamaConfig,
        tensors: Vec<(String, Tensor)>,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let mut names = Vec::with_capacity(tensors.len());
        let mut params = Vec::with_capacity(tensors.len());
        for (name, t) in tensors {
            params.push(Var::from_tensor(&t.to_dtype(dtype)?)?);
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
        let mut shapes = vec![(EMBEDDING.to_string(), vec![v, h])];
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

    /// An independent copy with its own parameter storage, so that passes at other
    /// parameters can run beside this model's.
    pub fn replica(&self) -> Result<Self> {
        let tensors = self
            .names
            .iter()
            .cloned()
            .zip(self.params.iter().map(|p| p.as_tensor().detach()))
            .collect();
        Self::from_tensors(self.config.clone(), tensors, self.dtype, &self.device)
    }

    /// The device the parameters live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The configuration.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// Number of parameters.
    pub fn num_params(&self) -> usize {
        self.params.iter().map(|p| p.elem_count()).sum()
    }

    fn index(&self, name: &str) -> usize {
        self.names
            .iter()
            .position(|n| n == name)
            .expect("known parameter")
    }

    fn param(&self, name: &str) -> &Tensor {
        self.params[self.index(name)].as_tensor()
    }

    fn rms_norm(&self, x: &Tensor, weight: &str, taps: &mut Taps) -> Result<Tensor> {
        let eps = self.config.rms_norm_eps;
        let scale = (x.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?.recip()?;
        let normed = x.broadcast_mul(&scale)?;
        let y = normed.broadcast_mul(self.param(weight))?;
        self.tap(
            taps,
            y,
            |param, probe| Tap::Scale {
                param,
                input: normed.detach(),
                probe,
            },
            weight,
        )
    }

    fn linear(&self, x: &Tensor, weight: &str, taps: &mut Taps) -> Result<Tensor> {
        let y = x.broadcast_matmul(&self.param(weight).t()?)?;
        self.tap(
            taps,
            y,
            |param, probe| Tap::Linear {
                param,
                input: x.detach(),
                probe,
            },
            weight,
        )
    }

    /// When recording, adds a zero probe to `y` (its gradient is the gradient of `y`) and
    /// records where parameter `weight` met the activations.
    fn tap(
        &self,
        taps: &mut Taps,
        y: Tensor,
        record: impl FnOnce(usize, Var) -> Tap,
        weight: &str,
    ) -> Result<Tensor> {
        let Some(taps) = taps else { return Ok(y) };
        let probe = Var::zeros(y.shape(), y.dtype(), y.device())?;
        let y = (y + probe.as_tensor())?;
        taps.push(record(self.index(weight), probe));
        Ok(y)
    }

    /// Logits `(batch, seq, vocab)` of token ids `(batch, seq)` (right padding is harmless:
    /// attention is causal).
    pub fn logits(&self, ids: &Tensor) -> Result<Tensor> {
        self.forward(ids, &mut None)
    }

    fn forward(&self, ids: &Tensor, taps: &mut Taps) -> Result<Tensor> {
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
        let embedded = self
            .param(EMBEDDING)
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((batch, seq, h))?;
        let mut x = self.tap(
            taps,
            embedded,
            |param, probe| Tap::Embedding {
                param,
                ids: ids.clone(),
                probe,
            },
            EMBEDDING,
        )?;
        for l in 0..c.num_hidden_layers {
            let p = format!("model.layers.{l}");
            let n = self.rms_norm(&x, &format!("{p}.input_layernorm.weight"), taps)?;
            let split = |t: Tensor, k: usize| -> Result<Tensor> {
                Ok(t.reshape((batch, seq, k, d))?
                    .transpose(1, 2)?
                    .contiguous()?)
            };
            let mut project = |name: &str, k: usize| -> Result<Tensor> {
                split(
                    self.linear(&n, &format!("{p}.self_attn.{name}.weight"), taps)?,
                    k,
                )
            };
            let q = rope(&project("q_proj", heads)?, &cos, &sin)?;
            let k = rope(&project("k_proj", kv)?, &cos, &sin)?;
            let v = project("v_proj", kv)?;
            let (k, v) = (repeat_kv(&k, heads / kv)?, repeat_kv(&v, heads / kv)?);
            let scores = (q.matmul(&k.t()?)? / (d as f64).sqrt())?.broadcast_add(&mask)?;
            let weights = candle_nn::ops::softmax(&scores, D::Minus1)?;
            let attended = weights
                .matmul(&v)?
                .transpose(1, 2)?
                .reshape((batch, seq, h))?;
            x = (x + self.linear(&attended, &format!("{p}.self_attn.o_proj.weight"), taps)?)?;
            let n = self.rms_norm(&x, &format!("{p}.post_attention_layernorm.weight"), taps)?;
            let gate = self
                .linear(&n, &format!("{p}.mlp.gate_proj.weight"), taps)?
                .silu()?;
            let up = self.linear(&n, &format!("{p}.mlp.up_proj.weight"), taps)?;
            x = (x + self.linear(&(gate * up)?, &format!("{p}.mlp.down_proj.weight"), taps)?)?;
        }
        let x = self.rms_norm(&x, "model.norm.weight", taps)?;
        self.linear(&x, "lm_head.weight", taps)
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
        self.sequence_losses_with(sequences, &mut None)
    }

    fn sequence_losses_with(&self, sequences: &[&[u32]], taps: &mut Taps) -> Result<Tensor> {
        let width = sequences.iter().map(|s| s.len()).max().unwrap_or(0);
        if sequences.is_empty() || sequences.iter().any(|s| s.len() < 2) {
            return Err(ModelError::Config(
                "every sequence needs at least two tokens to have a loss".into(),
            ));
        }
        let mut ids = Vec::with_capacity(sequences.len() * width);
        // Every position has a target; the last one and the padding (token 0) weigh nothing.
        let mut targets = Vec::with_capacity(sequences.len() * width);
        let mut weights = Vec::with_capacity(sequences.len() * width);
        for s in sequences {
            ids.extend_from_slice(s);
            ids.extend(std::iter::repeat_n(0u32, width - s.len()));
            targets.extend_from_slice(&s[1..]);
            targets.extend(std::iter::repeat_n(0u32, width - s.len() + 1));
            let w = 1.0 / (s.len() - 1) as f64;
            weights.extend(std::iter::repeat_n(w, s.len() - 1));
            weights.extend(std::iter::repeat_n(0.0, width - s.len() + 1));
        }
        let n = sequences.len();
        let ids = Tensor::from_vec(ids, (n, width), &self.device)?;
        let logits = self.forward(&ids, taps)?;
        let targets = Tensor::from_vec(targets, (n, width), &self.device)?;
        let picked = target_log_probs(&logits, &targets)?;
        let weights = Tensor::from_vec(weights, (n, width), &self.device)?.to_dtype(self.dtype)?;
        Ok((picked * weights)?.sum(1)?.neg()?)
    }

    /// Mean NLL over all predicted tokens of the sequences (long sequences weigh more), a
    /// scalar to differentiate: the training loss of [`crate::train`].
    pub fn token_loss(&self, sequences: &[&[u32]]) -> Result<Tensor> {
        let counts: Vec<f64> = sequences
            .iter()
            .map(|s| s.len().saturating_sub(1) as f64)
            .collect();
        let total: f64 = counts.iter().sum();
        let weights =
            Tensor::from_vec(counts, sequences.len(), &self.device)?.to_dtype(self.dtype)?;
        Ok(((self.sequence_losses(sequences)? * weights)?.sum_all()? / total.max(1.0))?)
    }

    /// The trainable variables (sharing storage with the model), for an optimizer.
    pub fn vars(&self) -> Vec<Var> {
        self.params.clone()
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

    /// Per-sequence gradient statistics from ONE batched forward and backward pass: for each
    /// sequence the norm of its loss gradient and, given a flat `direction`, the dot product
    /// of that gradient with it.
    ///
    /// The per-sequence gradient of every weight is rebuilt from the activations the weight
    /// met and the gradient at its output (recorded through zero probes): `dy^T x` for a
    /// linear layer, `sum_t dy * x` for a norm scale, `dy` rows added up by token for the
    /// embedding. Padding contributes nothing: attention is causal and padded positions
    /// carry no loss.
    pub fn sequence_gradients(
        &self,
        sequences: &[&[u32]],
        direction: Option<&[f64]>,
    ) -> Result<SequenceGradients> {
        if let Some(d) = direction.filter(|d| d.len() != self.num_params()) {
            return Err(ModelError::Config(format!(
                "direction of {} values for {} parameters",
                d.len(),
                self.num_params()
            )));
        }
        let mut taps = Some(Vec::new());
        let losses = self.sequence_losses_with(sequences, &mut taps)?;
        let grads = losses.sum_all()?.backward()?;
        let n = sequences.len();
        let zeros = || Tensor::zeros(n, DType::F64, &self.device);
        let (mut squares, mut dots) = (zeros()?, zeros()?);
        let mut offsets = Vec::with_capacity(self.params.len());
        let mut offset = 0;
        for p in &self.params {
            offsets.push(offset);
            offset += p.elem_count();
        }
        // The direction's slice for parameter `i`, shaped like it.
        let slice = |i: usize| -> Result<Option<Tensor>> {
            let Some(d) = direction else { return Ok(None) };
            let p = &self.params[i];
            let values = &d[offsets[i]..offsets[i] + p.elem_count()];
            Ok(Some(
                Tensor::from_slice(values, p.shape(), &self.device)?.to_dtype(self.dtype)?,
            ))
        };
        for tap in taps.unwrap_or_default() {
            let (param, probe) = match &tap {
                Tap::Linear { param, probe, .. }
                | Tap::Scale { param, probe, .. }
                | Tap::Embedding { param, probe, .. } => (*param, probe),
            };
            let Some(dy) = grads.get(probe.as_tensor()) else {
                continue;
            };
            let (square, dot) = match &tap {
                Tap::Linear { input, .. } => {
                    // (n, out, in): each sequence's weight gradient.
                    let g = dy
                        .transpose(1, 2)?
                        .contiguous()?
                        .matmul(&input.contiguous()?)?;
                    let dot = match slice(param)? {
                        Some(d) => Some(g.broadcast_mul(&d)?.sum((1, 2))?),
                        None => None,
                    };
                    (g.sqr()?.sum((1, 2))?, dot)
                }
                Tap::Scale { input, .. } => {
                    let g = (dy * input)?.sum(1)?;
                    let dot = match slice(param)? {
                        Some(d) => Some(g.broadcast_mul(&d)?.sum(1)?),
                        None => None,
                    };
                    (g.sqr()?.sum(1)?, dot)
                }
                Tap::Embedding { ids, .. } => {
                    // ||sum over positions of each token||^2 = sum over position pairs with
                    // the same token of dy_s . dy_t.
                    let gram = dy.matmul(&dy.transpose(1, 2)?.contiguous()?)?;
                    let same = same_token_pairs(ids)?.to_dtype(self.dtype)?;
                    let dot = match slice(param)? {
                        Some(d) => {
                            let (b, s, h) = dy.dims3()?;
                            let rows =
                                d.index_select(&ids.flatten_all()?, 0)?.reshape((b, s, h))?;
                            Some((dy * rows)?.sum((1, 2))?)
                        }
                        None => None,
                    };
                    ((gram * same)?.sum((1, 2))?, dot)
                }
            };
            squares = (squares + square.to_dtype(DType::F64)?)?;
            if let Some(dot) = dot {
                dots = (dots + dot.to_dtype(DType::F64)?)?;
            }
        }
        Ok(SequenceGradients {
            norms: squares.sqrt()?.to_vec1()?,
            dots: dots.to_vec1()?,
        })
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

/// `(batch, seq, seq)` with 1 where positions s and t hold the same token id.
fn same_token_pairs(ids: &Tensor) -> Result<Tensor> {
    let (b, s) = ids.dims2()?;
    let rows = ids.to_vec2::<u32>()?;
    let pairs: Vec<u8> = rows
        .iter()
        .flat_map(|row| {
            row.iter()
                .flat_map(move |a| row.iter().map(move |c| u8::from(a == c)))
        })
        .collect();
    Ok(Tensor::from_vec(pairs, (b, s, s), ids.device())?)
}
