//! The Llama forward pass and token log-likelihoods on the CPU, in fused kernels.
//!
//! Composed from candle ops ([`LlamaModel::forward_composed`], the GPU path), a block
//! allocates and sweeps its activations once per op: head transposes and copies, rotary
//! embeddings, residual sums, SiLU and its product; and the output layer makes a
//! `(positions, vocabulary)` tensor of logits per document (50 MB for SmolLM2 at 256 tokens),
//! whose pages the kernel maps and zeroes anew each time. Here, with buffers made once per
//! batch:
//! - the query, key and value projections write side by side into one buffer;
//! - attention runs per (sequence, head): rotary embeddings are applied as the head's rows are
//!   copied into a small buffer, and both the scores and their weighted sum of the values are
//!   gemm products;
//! - the output and down projections add into the residual stream in place;
//! - the gate and up projections write side by side, and one pass makes `silu(gate) * up`;
//! - token log-likelihoods take the output projection one vocabulary slice at a time, in
//!   parallel, so that no document's logits are ever whole in memory.
//!
//! Every sum's order is fixed by the model and the sequence alone, not by the batch it is in
//! or the thread count: attention products are zero-padded to at least [`SMALLEST`] rows
//! (gemm sums the terms of products up to 16 x 16 in another order), and the vocabulary
//! slices' log-normalisers are merged in slice order.
//!
//! Float32 weights go straight to gemm; quantized ones (`dequantize=false`) through candle's
//! quantized product, one projection at a time.

use candle_core::quantized::QMatMul;
use candle_core::{DType, Device, Module, Tensor};
use gemm::Parallelism;
use rayon::prelude::*;

use super::{LlamaConfig, LlamaModel, RopeLayout};
use crate::cpu_kernels::{self, CpuF32, SharedMut};
use crate::{ModelError, Result};

/// Vocabulary entries per slice of the output projection: a slice's logits for a document of
/// 256 tokens take 1 MB.
const VOCAB_SLICE: usize = 1024;

/// Attention products are computed on at least this many rows (see the module doc).
const SMALLEST: usize = 17;

/// Where a projection writes: columns `col..col + n` of a row-major buffer `stride` wide,
/// overwritten or added to.
struct Dst<'a> {
    data: &'a mut [f32],
    stride: usize,
    col: usize,
    accumulate: bool,
}

impl<'a> Dst<'a> {
    fn new(data: &'a mut [f32], stride: usize, col: usize, accumulate: bool) -> Self {
        Self {
            data,
            stride,
            col,
            accumulate,
        }
    }
}

/// The `m` rows of `k` inputs a projection reads, `stride` apart in `data`.
#[derive(Clone, Copy)]
struct Rows<'a> {
    data: &'a [f32],
    m: usize,
    k: usize,
    stride: usize,
}

impl<'a> Rows<'a> {
    fn new(data: &'a [f32], m: usize, k: usize, stride: usize) -> Self {
        Self { data, m, k, stride }
    }

    fn contiguous(&self) -> Vec<f32> {
        (0..self.m)
            .flat_map(|r| &self.data[r * self.stride..r * self.stride + self.k])
            .copied()
            .collect()
    }
}

fn bad(what: String) -> ModelError {
    ModelError::Config(format!("llama forward: {what}"))
}

/// `dst (+)= x W^T` for the `n x k` weights of `w`.
fn project(w: &QMatMul, x: Rows, dst: Dst) -> Result<()> {
    let Rows { m, k, .. } = x;
    if m == 0 {
        return Ok(());
    }
    if let QMatMul::Tensor(weight) = w
        && weight.dtype() == DType::F32
    {
        let (n, wk) = weight.dims2()?;
        let view = CpuF32::of(weight)?;
        let ws = view.data()?;
        if wk != k
            || x.data.len() < (m - 1) * x.stride + k
            || dst.data.len() < (m - 1) * dst.stride + dst.col + n
            || dst.col + n > dst.stride
        {
            return Err(bad(format!(
                "weights {:?} do not fit {m} rows of {k} into columns {}.. of {}",
                weight.dims(),
                dst.col,
                dst.stride
            )));
        }
        // SAFETY: the checks above keep lhs (m x k, row stride x.stride), rhs (W^T: k x n read
        // from W's n x k rows) and dst (m x n at dst.col, row stride dst.stride) in bounds.
        unsafe {
            cpu_kernels::matmul(
                (m, n, k),
                (
                    dst.data.as_mut_ptr().add(dst.col),
                    dst.stride,
                    dst.accumulate,
                ),
                (x.data.as_ptr(), 1, x.stride),
                (ws.as_ptr(), k, 1),
                cpu_kernels::parallelism(),
            )
        };
        return Ok(());
    }
    let input = Tensor::from_vec(x.contiguous(), (m, k), &Device::Cpu)?;
    let out = w
        .forward(&input)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let n = out.len() / m;
    if dst.col + n > dst.stride || dst.data.len() < (m - 1) * dst.stride + dst.col + n {
        return Err(bad(format!(
            "a projection of {n} outputs does not fit columns {}.. of {}",
            dst.col, dst.stride
        )));
    }
    for (r, row) in out.chunks_exact(n).enumerate() {
        let to = &mut dst.data[r * dst.stride + dst.col..][..n];
        if dst.accumulate {
            to.iter_mut().zip(row).for_each(|(t, v)| *t += v);
        } else {
            to.copy_from_slice(row);
        }
    }
    Ok(())
}

/// The f32 values of a CPU weight vector.
fn vector(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}

/// RMS norm of every `width`-wide row of `x` into `out`.
fn rms_norm_rows(out: &mut [f32], x: &[f32], weight: &[f32], eps: f32) {
    let width = weight.len();
    let rows = cpu_kernels::rows_per_task(width);
    out.par_chunks_mut(rows * width)
        .zip(x.par_chunks(rows * width))
        .for_each(|(o, x)| {
            for (o, x) in o.chunks_exact_mut(width).zip(x.chunks_exact(width)) {
                cpu_kernels::rms_norm_into(o, x, weight, eps);
            }
        });
}

/// Rotary position embeddings: the angles' cosines and sines for every position.
struct Rotary {
    cos: Vec<f32>,
    sin: Vec<f32>,
    half: usize,
    layout: RopeLayout,
}

impl Rotary {
    fn new(config: &LlamaConfig, seq: usize, layout: RopeLayout) -> Self {
        let half = config.head_dim() / 2;
        let theta = config.rope_theta;
        let inverse: Vec<f32> = (0..half)
            .map(|i| (1.0 / theta.powf(2.0 * i as f64 / (2 * half) as f64)) as f32)
            .collect();
        let angles: Vec<f32> = (0..seq)
            .flat_map(|p| inverse.iter().map(move |f| p as f32 * f))
            .collect();
        Self {
            cos: angles.iter().map(|a| a.cos()).collect(),
            sin: angles.iter().map(|a| a.sin()).collect(),
            half,
            layout,
        }
    }

    /// `out = scale * rotate(head)` for the head's row at `position`.
    fn apply(&self, out: &mut [f32], head: &[f32], position: usize, scale: f32) {
        let h = self.half;
        let (cos, sin) = (
            &self.cos[position * h..][..h],
            &self.sin[position * h..][..h],
        );
        for i in 0..h {
            let (a, b) = match self.layout {
                RopeLayout::Interleaved => (2 * i, 2 * i + 1),
                RopeLayout::Halves => (i, i + h),
            };
            let (x0, x1) = (head[a], head[b]);
            out[a] = (x0 * cos[i] - x1 * sin[i]) * scale;
            out[b] = (x0 * sin[i] + x1 * cos[i]) * scale;
        }
    }
}

/// A `(sequence, head)` task's buffers: queries, keys, values and context `rows x head_dim`,
/// scores `rows x rows`. Rows past the sequence stay zero.
struct HeadBuffers {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    scores: Vec<f32>,
    context: Vec<f32>,
}

/// The shape of one attention call.
#[derive(Clone, Copy)]
struct AttentionShape {
    batch: usize,
    seq: usize,
    heads: usize,
    kv: usize,
    d: usize,
}

/// Causal grouped-query attention: `context` `(batch * seq) x (heads * d)` from `qkv`
/// `(batch * seq) x ((heads + 2 kv) * d)` (queries, keys and values side by side, before
/// rotary embeddings). Query `i` attends to keys `0..=i` only, so padding after a sequence
/// never reaches it.
fn attention(qkv: &[f32], context: &mut [f32], s: AttentionShape, rotary: &Rotary) {
    let AttentionShape {
        batch,
        seq,
        heads,
        kv,
        d,
    } = s;
    let (width, hidden, group) = ((heads + 2 * kv) * d, heads * d, heads / kv);
    let rows = seq.max(SMALLEST);
    let scale = 1.0 / (d as f32).sqrt();
    let dst = SharedMut(context.as_mut_ptr());
    (0..batch * heads).into_par_iter().for_each_init(
        || HeadBuffers {
            q: vec![0.0; rows * d],
            k: vec![0.0; rows * d],
            v: vec![0.0; rows * d],
            scores: vec![0.0; rows * rows],
            context: vec![0.0; rows * d],
        },
        |buf, task| {
            let (b, h) = (task / heads, task % heads);
            let kv_head = h / group;
            let (q_at, k_at, v_at) = (h * d, (heads + kv_head) * d, (heads + kv + kv_head) * d);
            for i in 0..seq {
                let token = &qkv[(b * seq + i) * width..][..width];
                let row = i * d..(i + 1) * d;
                rotary.apply(&mut buf.q[row.clone()], &token[q_at..q_at + d], i, scale);
                rotary.apply(&mut buf.k[row.clone()], &token[k_at..k_at + d], i, 1.0);
                buf.v[row].copy_from_slice(&token[v_at..v_at + d]);
            }
            // SAFETY: q and k are rows x d row-major (k read as its transpose), scores rows x rows.
            unsafe {
                cpu_kernels::matmul(
                    (rows, rows, d),
                    (buf.scores.as_mut_ptr(), rows, false),
                    (buf.q.as_ptr(), 1, d),
                    (buf.k.as_ptr(), d, 1),
                    Parallelism::None,
                )
            };
            for i in 0..seq {
                let row = &mut buf.scores[i * rows..(i + 1) * rows];
                cpu_kernels::softmax_in_place(&mut row[..=i]);
                row[i + 1..].fill(0.0);
            }
            // SAFETY: scores rows x rows, v and context rows x d, all row-major.
            unsafe {
                cpu_kernels::matmul(
                    (rows, d, rows),
                    (buf.context.as_mut_ptr(), d, false),
                    (buf.scores.as_ptr(), 1, rows),
                    (buf.v.as_ptr(), 1, d),
                    Parallelism::None,
                )
            };
            for i in 0..seq {
                // SAFETY: row b*seq+i, columns h*d..(h+1)*d of context: this task's alone.
                let out = unsafe {
                    std::slice::from_raw_parts_mut(dst.at((b * seq + i) * hidden + h * d), d)
                };
                out.copy_from_slice(&buf.context[i * d..(i + 1) * d]);
            }
        },
    );
}

/// The final, normalised hidden states `(batch * seq) x hidden` of right-padded `ids`
/// `batch x seq`.
pub(super) fn hidden_states(
    model: &LlamaModel,
    ids: &[u32],
    batch: usize,
    seq: usize,
) -> Result<Vec<f32>> {
    let c = &model.config;
    let (h, inner) = (c.hidden_size, c.intermediate_size);
    let (heads, kv, d) = (c.num_attention_heads, c.kv_heads(), c.head_dim());
    let m = batch * seq;
    let eps = c.rms_norm_eps as f32;
    let embedding = CpuF32::of(&model.embedding)?;
    let table = embedding.data()?;
    let mut x = Vec::with_capacity(m * h);
    for &id in ids {
        let row = table
            .get(id as usize * h..(id as usize + 1) * h)
            .ok_or_else(|| bad(format!("token id {id} is outside the vocabulary")))?;
        x.extend_from_slice(row);
    }
    let rotary = Rotary::new(c, seq, model.rope);
    let shape = AttentionShape {
        batch,
        seq,
        heads,
        kv,
        d,
    };
    let qkv_width = (heads + 2 * kv) * d;
    let mut normed = vec![0f32; m * h];
    let mut qkv = vec![0f32; m * qkv_width];
    let mut context = vec![0f32; m * heads * d];
    let mut gate_up = vec![0f32; m * 2 * inner];
    for b in &model.blocks {
        rms_norm_rows(&mut normed, &x, &vector(&b.attention_norm)?, eps);
        let input = Rows::new(&normed, m, h, h);
        project(&b.q, input, Dst::new(&mut qkv, qkv_width, 0, false))?;
        project(&b.k, input, Dst::new(&mut qkv, qkv_width, heads * d, false))?;
        project(
            &b.v,
            input,
            Dst::new(&mut qkv, qkv_width, (heads + kv) * d, false),
        )?;
        attention(&qkv, &mut context, shape, &rotary);
        let context_rows = Rows::new(&context, m, heads * d, heads * d);
        project(&b.o, context_rows, Dst::new(&mut x, h, 0, true))?;

        rms_norm_rows(&mut normed, &x, &vector(&b.ffn_norm)?, eps);
        let input = Rows::new(&normed, m, h, h);
        project(&b.gate, input, Dst::new(&mut gate_up, 2 * inner, 0, false))?;
        project(
            &b.up,
            input,
            Dst::new(&mut gate_up, 2 * inner, inner, false),
        )?;
        gate_up.par_chunks_mut(2 * inner).for_each(|row| {
            let (gate, up) = row.split_at_mut(inner);
            cpu_kernels::silu_times_in_place(gate, up);
        });
        let gated = Rows::new(&gate_up, m, inner, 2 * inner);
        project(&b.down, gated, Dst::new(&mut x, h, 0, true))?;
    }
    rms_norm_rows(&mut normed, &x, &vector(&model.norm)?, eps);
    Ok(normed)
}

/// The summed `-ln p(target)` of the positions whose final hidden states are the rows of
/// `hidden` (`targets.len() x hidden_size`).
pub(super) fn target_nll(model: &LlamaModel, hidden: &[f32], targets: &[u32]) -> Result<f64> {
    sliced_target_nll(model, hidden, targets, VOCAB_SLICE)
}

/// One vocabulary slice's share of the output layer.
struct VocabSlice {
    /// Each position's log-sum-exp of its logits in the slice.
    log_sums: Vec<f32>,
    /// `(position, logit)` of the targets that fall in the slice.
    picked: Vec<(usize, f32)>,
}

fn sliced_target_nll(
    model: &LlamaModel,
    hidden: &[f32],
    targets: &[u32],
    slice: usize,
) -> Result<f64> {
    let h = model.config.hidden_size;
    let r = targets.len();
    let QMatMul::Tensor(weight) = &model.lm_head else {
        let hidden = Tensor::from_slice(hidden, (r, h), &Device::Cpu)?;
        return model.composed_nll(&hidden, targets);
    };
    let view = CpuF32::of(weight)?;
    let ws = view.data()?;
    let vocab = ws.len() / h;
    if hidden.len() != r * h {
        return Err(bad(format!(
            "{} hidden values for {r} targets",
            hidden.len()
        )));
    }
    if let Some(t) = targets.iter().find(|&&t| t as usize >= vocab) {
        return Err(bad(format!(
            "token id {t} is outside the vocabulary of {vocab}"
        )));
    }
    let slices: Vec<VocabSlice> = (0..vocab.div_ceil(slice))
        .into_par_iter()
        .map_init(Vec::new, |logits: &mut Vec<f32>, s| {
            let start = s * slice;
            let n = slice.min(vocab - start);
            logits.resize(r * n, 0.0);
            // SAFETY: hidden is r x h, the slice's weights n x h rows read as their transpose,
            // logits r x n; all row-major.
            unsafe {
                cpu_kernels::matmul(
                    (r, n, h),
                    (logits.as_mut_ptr(), n, false),
                    (hidden.as_ptr(), 1, h),
                    (ws[start * h..].as_ptr(), h, 1),
                    Parallelism::None,
                )
            };
            let log_sums = logits
                .chunks_exact(n)
                .map(|row| {
                    let (max, log_sum) = cpu_kernels::log_normaliser(row);
                    max + log_sum
                })
                .collect();
            let picked = targets
                .iter()
                .enumerate()
                .filter_map(|(p, &t)| {
                    let col = (t as usize).checked_sub(start).filter(|&c| c < n)?;
                    Some((p, logits[p * n + col]))
                })
                .collect();
            VocabSlice { log_sums, picked }
        })
        .collect();
    let mut target_logit = vec![0f32; r];
    for slice in &slices {
        for &(p, logit) in &slice.picked {
            target_logit[p] = logit;
        }
    }
    Ok((0..r)
        .map(|p| {
            let top = slices
                .iter()
                .map(|s| s.log_sums[p])
                .fold(f32::NEG_INFINITY, f32::max) as f64;
            let total: f64 = slices
                .iter()
                .map(|s| (s.log_sums[p] as f64 - top).exp())
                .sum();
            top + total.ln() - target_logit[p] as f64
        })
        .sum())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    /// A tiny random model loaded from a Hugging Face directory, with the rotary layout given.
    fn tiny(layout: RopeLayout) -> (tempfile::TempDir, LlamaModel) {
        let dir = tempfile::tempdir().unwrap();
        testing::write_llama(dir.path(), 5).unwrap();
        let lm = super::super::LanguageModel::load(dir.path(), 64, &Device::Cpu).unwrap();
        let mut model = lm.model;
        model.rope = layout;
        (dir, model)
    }

    #[test]
    fn fused_forward_matches_composed_ops_for_both_rotary_layouts() {
        for layout in [RopeLayout::Halves, RopeLayout::Interleaved] {
            let (_dir, model) = tiny(layout);
            let (batch, seq) = (3, 23);
            let ids: Vec<u32> = (0..batch * seq)
                .map(|i| (i * 7 % model.config.vocab_size) as u32)
                .collect();
            let got = hidden_states(&model, &ids, batch, seq).unwrap();
            let ids = Tensor::from_vec(ids, (batch, seq), &Device::Cpu).unwrap();
            let want = model
                .forward_composed(&ids)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let diff = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(diff < 1e-4, "{layout:?}: {diff}");
        }
    }

    #[test]
    fn sliced_output_layer_matches_composed_log_softmax() {
        let (_dir, model) = tiny(RopeLayout::Halves);
        let h = model.config.hidden_size;
        let r = 9;
        let hidden: Vec<f32> = (0..r * h)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
            .collect();
        let targets: Vec<u32> = (0..r as u32).map(|p| (p * 5 + 3) % 20).collect();
        // Three slices, the last one shorter.
        let slice = model.config.vocab_size / 3 + 1;
        let got = sliced_target_nll(&model, &hidden, &targets, slice).unwrap();
        let rows = Tensor::from_slice(&hidden, (r, h), &Device::Cpu).unwrap();
        let want = model.composed_nll(&rows, &targets).unwrap();
        assert!(
            (got - want).abs() < 1e-4 * want.abs().max(1.0),
            "{got} vs {want}"
        );
        // An id past the vocabulary is refused, not read out of bounds.
        let e = target_nll(&model, &hidden[..h], &[10_000]).unwrap_err();
        assert!(e.to_string().contains("outside the vocabulary"), "{e}");
    }
}
