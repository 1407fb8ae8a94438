//! Fused CPU kernels for inference: the encoder's layers here, the causal LM's in
//! [`crate::llama`] (`cpu_forward`), which share the matrix product and row kernels below.
//!
//! candle builds a BERT layer from whole-tensor ops that each allocate and sweep the
//! activations: a bias addition after every matrix product, the residual sum, the attention
//! scale, mask and softmax on a `(batch, heads, seq, seq)` tensor, head transposes, and a GELU
//! whose erf is a scalar call on one thread. On the CPU these sweeps cost more than the matrix
//! products. The kernels here do the same arithmetic with fewer passes over f32 data: a matrix
//! product writes into fresh, never-zeroed memory, and one pass then adds bias and applies GELU,
//! or adds bias and residual and normalises the row (a plain linear layer instead starts its
//! destination as the bias and accumulates the product into it); attention runs per (sequence,
//! head) on a small buffer that reads Q, K and V in place and writes the merged heads directly;
//! GELU uses a vectorisable erf. Row sums and maxima keep 16 partial results, so that they
//! vectorise too (a single running sum is a serial dependency chain).
//!
//! They carry no gradients (inference only) and take contiguous f32 tensors on the CPU; other
//! devices and dtypes use candle's ops (see [`crate::bert::BertEncoder`]). Matrix products go
//! through `gemm`, the crate behind candle's own CPU matrix product, on the current rayon pool.

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, Device, Storage, StorageRef, Tensor};
use gemm::Parallelism;
use rayon::prelude::*;

/// The contiguous f32 data of a CPU tensor, borrowed for as long as the view lives.
pub(crate) struct CpuF32<'a> {
    storage: StorageRef<'a>,
    start: usize,
    end: usize,
}

impl<'a> CpuF32<'a> {
    pub(crate) fn of(t: &'a Tensor) -> candle_core::Result<Self> {
        let (storage, layout) = t.storage_and_layout();
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!(
                "fused CPU kernel: tensor of shape {:?} is not contiguous",
                t.dims()
            )
        };
        Ok(Self {
            storage,
            start,
            end,
        })
    }

    pub(crate) fn data(&self) -> candle_core::Result<&[f32]> {
        match &*self.storage {
            Storage::Cpu(cpu @ CpuStorage::F32(_)) => {
                Ok(&cpu.as_slice::<f32>()?[self.start..self.end])
            }
            _ => candle_core::bail!("fused CPU kernel: expected an f32 tensor on the CPU"),
        }
    }
}

/// A raw pointer that rayon tasks may share: every task writes a disjoint part of the buffer.
#[derive(Clone, Copy)]
pub(crate) struct SharedMut(pub(crate) *mut f32);
// SAFETY: the pointer is only used by tasks that write disjoint elements (see `attention`).
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// The pointer `offset` elements on. A method, so that closures capture the whole wrapper.
    pub(crate) fn at(self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

pub(crate) fn parallelism() -> Parallelism {
    match rayon::current_num_threads() {
        0 | 1 => Parallelism::None,
        n => Parallelism::Rayon(n),
    }
}

/// The `(m, n, k)` product of an `m x k` and a `k x n` f32 matrix into a row-major `m x n`
/// destination `(pointer, row stride, accumulate)`: overwritten, or added to when
/// `accumulate`. Each operand is `(pointer, column stride, row stride)`.
///
/// # Safety
/// Every pointer must address its whole matrix at the given strides.
pub(crate) unsafe fn matmul(
    (m, n, k): (usize, usize, usize),
    (dst, dst_rs, accumulate): (*mut f32, usize, bool),
    (lhs, lhs_cs, lhs_rs): (*const f32, usize, usize),
    (rhs, rhs_cs, rhs_rs): (*const f32, usize, usize),
    parallelism: Parallelism,
) {
    let alpha = if accumulate { 1.0 } else { 0.0 };
    // SAFETY: the caller guarantees the extents; gemm computes dst = alpha dst + lhs rhs.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            accumulate,
            lhs,
            lhs_cs as isize,
            lhs_rs as isize,
            rhs,
            rhs_cs as isize,
            rhs_rs as isize,
            alpha,
            1.0,
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// `x W^T + b` for `x` `(.., k)`, `weight` `(n, k)` and `bias` `(n)`.
pub fn linear(x: &Tensor, weight: &Tensor, bias: &Tensor) -> candle_core::Result<Tensor> {
    let shape = ProductShape::check(x, weight, bias, None)?;
    let bs = CpuF32::of(bias)?;
    let bs = bs.data()?;
    // The destination starts as the bias; the product is accumulated into it.
    let out = shape.product(x, weight, |fresh| {
        fresh
            .par_chunks_mut(shape.rows_per_task() * shape.n)
            .for_each(|o| {
                o.iter_mut().zip(bs.iter().cycle()).for_each(|(o, b)| {
                    o.write(*b);
                })
            })
    })?;
    Tensor::from_vec(out, shape.dims, &Device::Cpu)
}

/// `GELU(x W^T + b)` with the exact (erf) GELU: the product is written alone, then bias and
/// activation are applied in one pass over it.
pub fn linear_gelu(x: &Tensor, weight: &Tensor, bias: &Tensor) -> candle_core::Result<Tensor> {
    let shape = ProductShape::check(x, weight, bias, None)?;
    let bs = CpuF32::of(bias)?;
    let bs = bs.data()?;
    let mut out = shape.product_only(x, weight)?;
    out.par_chunks_mut(shape.rows_per_task() * shape.n)
        .for_each(|rows| {
            rows.chunks_exact_mut(shape.n)
                .for_each(|row| bias_gelu_in_place(row, bs))
        });
    Tensor::from_vec(out, shape.dims, &Device::Cpu)
}

/// The affine layer norm that follows a linear layer: its `(n)` weight and bias and epsilon.
#[derive(Clone, Copy)]
pub struct RowNorm<'a> {
    /// Per-column scale.
    pub weight: &'a Tensor,
    /// Per-column shift.
    pub bias: &'a Tensor,
    /// Added to the variance.
    pub eps: f64,
}

/// `LayerNorm(x W^T + b + residual)` over the last dimension: the product is written alone,
/// then bias, residual and normalisation are applied row by row in one pass over it.
pub fn linear_residual_norm(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    residual: &Tensor,
    norm: RowNorm,
) -> candle_core::Result<Tensor> {
    let shape = ProductShape::check(x, weight, bias, Some(residual))?;
    let n = shape.n;
    if norm.weight.dims() != [n] || norm.bias.dims() != [n] {
        candle_core::bail!(
            "fused layer norm: weight {:?} and bias {:?} do not fit rows of {n}",
            norm.weight.dims(),
            norm.bias.dims()
        )
    }
    let views = [bias, residual, norm.weight, norm.bias].map(CpuF32::of);
    let [b, r, w, nb] = views;
    let (b, r, w, nb) = (b?, r?, w?, nb?);
    let row = RowParts {
        bias: b.data()?,
        weight: w.data()?,
        norm_bias: nb.data()?,
        eps: norm.eps as f32,
    };
    let mut out = shape.product_only(x, weight)?;
    let step = shape.rows_per_task() * n;
    out.par_chunks_mut(step)
        .zip(r.data()?.par_chunks(step))
        .for_each(|(rows, residual)| {
            rows.chunks_exact_mut(n)
                .zip(residual.chunks_exact(n))
                .for_each(|(v, r)| residual_layer_norm_in_place(v, r, row))
        });
    Tensor::from_vec(out, shape.dims, &Device::Cpu)
}

/// Rows of `width` values per parallel task of an element-wise pass: about 16K values.
pub(crate) fn rows_per_task(width: usize) -> usize {
    (1 << 14) / width.max(1) + 1
}

/// Writes every element of a product's fresh destination before the product is added to it.
type Fill<'a> = &'a dyn Fn(&mut [MaybeUninit<f32>]);

/// The checked shape of a linear layer's product: `m` rows of `k` inputs, `n` outputs.
struct ProductShape {
    m: usize,
    n: usize,
    k: usize,
    dims: Vec<usize>,
}

impl ProductShape {
    fn check(
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        residual: Option<&Tensor>,
    ) -> candle_core::Result<Self> {
        let (n, k) = weight.dims2()?;
        let mut dims = x.dims().to_vec();
        // k = 0 would leave the product unwritten.
        if k == 0 || dims.last() != Some(&k) || bias.dims() != [n] {
            candle_core::bail!(
                "fused linear: input {:?}, weight {:?} and bias {:?} do not fit",
                x.dims(),
                weight.dims(),
                bias.dims()
            )
        }
        dims.pop();
        dims.push(n);
        if let Some(r) = residual
            && r.dims() != dims.as_slice()
        {
            candle_core::bail!("fused linear: residual {:?} is not {:?}", r.dims(), dims)
        }
        let m = dims.iter().product::<usize>() / n.max(1);
        Ok(Self { m, n, k, dims })
    }

    fn rows_per_task(&self) -> usize {
        rows_per_task(self.n)
    }

    /// `x W^T` alone, written into fresh memory.
    fn product_only(&self, x: &Tensor, weight: &Tensor) -> candle_core::Result<Vec<f32>> {
        self.matmul_into(x, weight, None)
    }

    /// `x W^T` added to a destination that `fill` first writes completely.
    fn product(
        &self,
        x: &Tensor,
        weight: &Tensor,
        fill: impl Fn(&mut [MaybeUninit<f32>]),
    ) -> candle_core::Result<Vec<f32>> {
        self.matmul_into(x, weight, Some(&fill))
    }

    fn matmul_into(
        &self,
        x: &Tensor,
        weight: &Tensor,
        fill: Option<Fill>,
    ) -> candle_core::Result<Vec<f32>> {
        let Self { m, n, k, .. } = *self;
        let len = m * n;
        let mut out = Vec::with_capacity(len);
        if len == 0 {
            return Ok(out);
        }
        let (xv, wv) = (CpuF32::of(x)?, CpuF32::of(weight)?);
        let (xs, ws) = (xv.data()?, wv.data()?);
        let accumulate = fill.is_some();
        if let Some(fill) = fill {
            fill(&mut out.spare_capacity_mut()[..len]);
        }
        // SAFETY: lhs is m x k row-major (xs holds m*k), rhs (k x n) is W^T read from W's n x k
        // row-major data (column stride k, row stride 1), dst is m x n row-major in out's
        // capacity; it is read only when `fill` wrote all of it, and the product writes all of
        // it, so every element is initialised when the length is set.
        unsafe {
            let dst = out.spare_capacity_mut().as_mut_ptr().cast::<f32>();
            matmul(
                (m, n, k),
                (dst, n, accumulate),
                (xs.as_ptr(), 1, k),
                (ws.as_ptr(), k, 1),
                parallelism(),
            );
            out.set_len(len);
        }
        Ok(out)
    }
}

/// Multi-head self-attention: the context `(batch, seq, hidden)` from the fused projections
/// `qkv` `(batch, seq, 3 * hidden)` (queries, keys, values side by side, the queries already
/// scaled by 1/sqrt(head_dim)). `key_bias` `(batch, seq)`, when given, marks the padding of
/// right-padded sequences: 0 for real tokens, which come first, a large negative number for
/// padding; queries attend to the real keys only.
pub fn attention(
    qkv: &Tensor,
    heads: usize,
    key_bias: Option<&Tensor>,
) -> candle_core::Result<Tensor> {
    let (batch, seq, width) = qkv.dims3()?;
    if heads == 0 || width % (3 * heads) != 0 {
        candle_core::bail!("fused attention: width {width} is not 3 x a multiple of {heads} heads")
    }
    if let Some(b) = key_bias
        && b.dims() != [batch, seq]
    {
        candle_core::bail!(
            "fused attention: key bias {:?} is not [{batch}, {seq}]",
            b.dims()
        )
    }
    let hidden = width / 3;
    let head_dim = hidden / heads;
    let qkv_view = CpuF32::of(qkv)?;
    let qkv = qkv_view.data()?;
    let bias_view = key_bias.map(CpuF32::of).transpose()?;
    let bias = bias_view.as_ref().map(|b| b.data()).transpose()?;
    // Every element is written by exactly one of a task's products with the values (which do
    // not read the destination), so the buffer is not zeroed first.
    let len = batch * seq * hidden;
    let mut out: Vec<f32> = Vec::with_capacity(len);
    let dst = SharedMut(out.spare_capacity_mut().as_mut_ptr().cast());
    (0..batch * heads).into_par_iter().for_each_init(
        || vec![0f32; seq * seq],
        |scores, task| {
            let (b, h) = (task / heads, task % heads);
            let row0 = b * seq * width;
            let q = qkv[row0 + h * head_dim..].as_ptr();
            let k = qkv[row0 + hidden + h * head_dim..].as_ptr();
            let v = qkv[row0 + 2 * hidden + h * head_dim..].as_ptr();
            // Right padding: the real keys come first, and every query attends to them alone.
            // Real queries and padding queries are separate products: a product's shape picks
            // gemm's kernel (and so the order of its sums), and the real queries' shape is
            // then the sequence's own, so it gets the same bits whatever its batch's width.
            let keys = bias.map_or(seq, |bias| {
                bias[b * seq..(b + 1) * seq]
                    .iter()
                    .take_while(|&&x| x == 0.0)
                    .count()
                    .max(1)
            });
            let mut attend = |first: usize, count: usize| {
                // SAFETY: q, k and v address seq rows of head_dim values, width apart, inside
                // sequence b of qkv, of which rows first..first+count and 0..keys are read;
                // scores holds count x keys; the destination is rows first.. of sequence b
                // of out, columns h*head_dim.. of each: this task's (sequence, head) block,
                // which no other task writes.
                unsafe {
                    matmul(
                        (count, keys, head_dim),
                        (scores.as_mut_ptr(), keys, false),
                        (q.wrapping_add(first * width), 1, width),
                        (k, width, 1),
                        Parallelism::None,
                    );
                    scores[..count * keys]
                        .chunks_exact_mut(keys)
                        .for_each(softmax_in_place);
                    matmul(
                        (count, head_dim, keys),
                        (
                            dst.at((b * seq + first) * hidden + h * head_dim),
                            hidden,
                            false,
                        ),
                        (scores.as_ptr(), 1, keys),
                        (v, 1, width),
                        Parallelism::None,
                    )
                }
            };
            attend(0, keys);
            if keys < seq {
                attend(keys, seq - keys);
            }
        },
    );
    // SAFETY: the batch x heads tasks wrote every (row, head) block, i.e. all len elements.
    unsafe { out.set_len(len) };
    Tensor::from_vec(out, (batch, seq, hidden), &Device::Cpu)
}

/// Compiles `$body` (a loop over a slice) twice, for the baseline CPU and for AVX-512, and picks
/// the version at run time: the element functions below are branch-free, so the compiler
/// vectorises the loops, 16 lanes wide where the CPU has AVX-512.
macro_rules! vectorised {
    ($(#[$doc:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? $body:block) => {
        $(#[$doc])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                fn wide($($arg: $ty),*) $(-> $ret)? $body
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has AVX-512F, checked just above.
                    return unsafe { wide($($arg),*) };
                }
            }
            $body
        }
    };
}

vectorised! {
    /// GELU (erf) of every element of a row plus its column's bias.
    fn bias_gelu_in_place(row: &mut [f32], bias: &[f32]) {
        row.iter_mut().zip(bias).for_each(|(x, b)| *x = gelu_erf(*x + b));
    }
}

vectorised! {
    /// Softmax of one row of scores.
    pub(crate) fn softmax_in_place(row: &mut [f32]) {
        let max = lanes(row, f32::NEG_INFINITY, larger, larger);
        row.iter_mut().for_each(|v| *v = exp_nonpositive(*v - max));
        let inverse = 1.0 / lanes(row, 0.0, |a, v| a + v, |a, b| a + b);
        row.iter_mut().for_each(|v| *v *= inverse);
    }
}

vectorised! {
    /// The log-normaliser of a softmax over `row`: `(max, ln sum_i exp(row_i - max))`.
    pub(crate) fn log_normaliser(row: &[f32]) -> (f32, f32) {
        let max = lanes(row, f32::NEG_INFINITY, larger, larger);
        let sum = lanes(row, 0.0, |a, v| a + exp_nonpositive(v - max), |a, b| a + b);
        (max, sum.ln())
    }
}

vectorised! {
    /// `out_i = scale * exp(row_i - shift)`, for a `shift` of at least the row's maximum.
    pub(crate) fn scaled_exp_into(out: &mut [f32], row: &[f32], shift: f32, scale: f32) {
        out.iter_mut()
            .zip(row)
            .for_each(|(o, &v)| *o = scale * exp_nonpositive(v - shift));
    }
}

vectorised! {
    /// RMS norm of a row: `out_i = row_i / sqrt(mean(row^2) + eps) * weight_i`.
    pub(crate) fn rms_norm_into(out: &mut [f32], row: &[f32], weight: &[f32], eps: f32) {
        let mean_square = lanes(row, 0.0, |a, v| a + v * v, |a, b| a + b) / row.len() as f32;
        let inverse = 1.0 / (mean_square + eps).sqrt();
        out.iter_mut()
            .zip(row.iter().zip(weight))
            .for_each(|(o, (v, w))| *o = v * inverse * w);
    }
}

vectorised! {
    /// SwiGLU's gate: `gate_i = silu(gate_i) * up_i`, with `silu(g) = g / (1 + e^-g)` taken
    /// through `e^-|g|` so that the exponential never overflows.
    pub(crate) fn silu_times_in_place(gate: &mut [f32], up: &[f32]) {
        gate.iter_mut().zip(up).for_each(|(g, u)| {
            let e = exp_nonpositive(-g.abs());
            let sigmoid = if *g >= 0.0 { 1.0 / (1.0 + e) } else { e / (1.0 + e) };
            *g = *g * sigmoid * u;
        });
    }
}

/// The per-column vectors of [`residual_layer_norm_in_place`].
#[derive(Clone, Copy)]
struct RowParts<'a> {
    bias: &'a [f32],
    weight: &'a [f32],
    norm_bias: &'a [f32],
    eps: f32,
}

vectorised! {
    /// Layer norm of a row plus its residual row and the linear layer's bias:
    /// `v = row + residual + bias`, then `(v - mean) / sqrt(variance + eps) * weight + norm_bias`.
    fn residual_layer_norm_in_place(row: &mut [f32], residual: &[f32], p: RowParts) {
        row.iter_mut()
            .zip(residual.iter().zip(p.bias))
            .for_each(|(v, (r, b))| *v += r + b);
        let n = row.len() as f32;
        let mean = lanes(row, 0.0, |a, v| a + v, |a, b| a + b) / n;
        row.iter_mut().for_each(|v| *v -= mean);
        let variance = lanes(row, 0.0, |a, v| a + v * v, |a, b| a + b) / n;
        let inverse = 1.0 / (variance + p.eps).sqrt();
        row.iter_mut()
            .zip(p.weight.iter().zip(p.norm_bias))
            .for_each(|(v, (w, b))| *v = *v * inverse * w + b);
    }
}

/// The larger of two values, written as a comparison: `f32::max` must return the non-NaN
/// operand, a check per element that doubled the time of [`log_normaliser`]. A NaN still
/// reaches the result through the exponentials that follow.
#[inline(always)]
fn larger(a: f32, b: f32) -> f32 {
    if b > a { b } else { a }
}

/// Folds `values` with `step` into 16 independent lanes started at `init`, then merges the
/// lanes with `merge`: the compiler keeps the lanes in vector registers, where a single running
/// accumulator would be a serial chain.
#[inline(always)]
fn lanes(
    values: &[f32],
    init: f32,
    step: impl Fn(f32, f32) -> f32,
    merge: impl Fn(f32, f32) -> f32,
) -> f32 {
    let mut acc = [init; 16];
    let chunks = values.chunks_exact(16);
    let rest = chunks.remainder();
    for chunk in chunks {
        acc.iter_mut()
            .zip(chunk)
            .for_each(|(a, &v)| *a = step(*a, v));
    }
    let partial = rest.iter().fold(init, |a, &v| step(a, v));
    acc.iter().fold(partial, |a, &v| merge(a, v))
}

/// `e^x` for `x <= 0`, branch-free so that loops over it vectorise: `e^x = 2^n e^g` with
/// `n = round(x log2 e)` and `g = x - n ln 2` (`|g| <= ln 2 / 2`, subtracted in two parts so
/// that it is exact to f32 precision), `e^g` by its Taylor series to degree 7 (truncation
/// error below 1e-8). Results below 2^-126 flush to 0.
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    // Adding and subtracting 1.5 * 2^23 rounds an f32 of magnitude below 2^22 to an integer.
    const ROUND: f32 = 12_582_912.0;
    // ln 2 = LN2_HI + LN2_LO, LN2_HI with 9 significant bits so that n * LN2_HI is exact.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let y = x * std::f32::consts::LOG2_E;
    let shifted = y.max(-126.0) + ROUND;
    let n = shifted - ROUND;
    let g = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + g * (1.0
            + g * (1.0 / 2.0
                + g * (1.0 / 6.0
                    + g * (1.0 / 24.0
                        + g * (1.0 / 120.0 + g * (1.0 / 720.0 + g * (1.0 / 5040.0)))))));
    // The low bits of `shifted` hold n: its bits minus those of ROUND, plus the exponent bias
    // 127, shifted into the exponent field give 2^n (wrapping arithmetic: no checks, no branch).
    let scale = f32::from_bits(shifted.to_bits().wrapping_sub(ROUND.to_bits() - 127) << 23);
    if y < -126.0 { 0.0 } else { p * scale }
}

/// The exact GELU, `x/2 (1 + erf(x/sqrt 2))`. With `q = erfc(|x|/sqrt 2)` by Abramowitz and
/// Stegun 7.1.26 (absolute error below 1.5e-7), `1 + erf` is `2 - q` for `x >= 0` and `q`
/// itself for `x < 0`, which keeps the negative tail accurate.
#[inline(always)]
fn gelu_erf(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_74,
        1.421_413_8,
        -1.453_152,
        1.061_405_4,
    ];
    let z = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + P * z);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    let q = poly * exp_nonpositive(-z * z);
    0.5 * x * if x >= 0.0 { 2.0 - q } else { q }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
        crate::testing::max_abs_diff(a, b).unwrap()
    }

    #[test]
    fn silu_and_rms_norm_match_candle() {
        let dev = Device::Cpu;
        let gate: Vec<f32> = (0..203).map(|i| (i as f32 - 101.0) * 0.9).collect();
        let up: Vec<f32> = (0..203).map(|i| 1.0 + (i % 7) as f32 * 0.25).collect();
        let mut got = gate.clone();
        silu_times_in_place(&mut got, &up);
        let want = (candle_nn::ops::silu(&Tensor::new(gate.as_slice(), &dev).unwrap()).unwrap()
            * Tensor::new(up.as_slice(), &dev).unwrap())
        .unwrap();
        let got_t = Tensor::new(got.as_slice(), &dev).unwrap();
        // Relative: silu(90.9) * 2.5 is about 227.
        assert!(
            max_abs_diff(&got_t, &want) < 1e-4,
            "{}",
            max_abs_diff(&got_t, &want)
        );
        assert!(got.iter().all(|v| v.is_finite()));

        let row: Vec<f32> = (0..576)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        let weight: Vec<f32> = (0..576).map(|i| 0.5 + (i % 5) as f32 * 0.1).collect();
        let mut out = vec![0f32; 576];
        rms_norm_into(&mut out, &row, &weight, 1e-5);
        let want = candle_nn::ops::rms_norm(
            &Tensor::new(row.as_slice(), &dev)
                .unwrap()
                .unsqueeze(0)
                .unwrap(),
            &Tensor::new(weight.as_slice(), &dev).unwrap(),
            1e-5,
        )
        .unwrap()
        .squeeze(0)
        .unwrap();
        let out = Tensor::new(out.as_slice(), &dev).unwrap();
        assert!(max_abs_diff(&out, &want) < 1e-5);
    }

    #[test]
    fn exp_matches_std() {
        for i in 0..=200_000 {
            let x = -(i as f32) * 0.0005;
            let (got, want) = (exp_nonpositive(x), x.exp());
            assert!(
                (got - want).abs() <= 3e-7 * want + f32::MIN_POSITIVE,
                "exp({x}) = {got}, want {want}"
            );
        }
        assert_eq!(exp_nonpositive(-1e9), 0.0);
        assert_eq!(exp_nonpositive(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_nonpositive(0.0), 1.0);
    }

    #[test]
    fn gelu_matches_candle() {
        let x = Tensor::arange(-12_000i64, 12_000, &Device::Cpu)
            .unwrap()
            .to_dtype(candle_core::DType::F32)
            .unwrap()
            .affine(1e-3, 0.0)
            .unwrap();
        let want = x.gelu_erf().unwrap();
        let got = x
            .to_vec1::<f32>()
            .unwrap()
            .into_iter()
            .map(gelu_erf)
            .collect::<Vec<_>>();
        let got = Tensor::new(got, &Device::Cpu).unwrap();
        assert!(max_abs_diff(&got, &want) < 1e-6);
    }

    #[test]
    fn linear_matches_composed_ops() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (3, 5, 16), &dev).unwrap();
        let w = Tensor::randn(0f32, 1.0, (24, 16), &dev).unwrap();
        let b = Tensor::randn(0f32, 1.0, 24, &dev).unwrap();
        let r = Tensor::randn(0f32, 1.0, (3, 5, 24), &dev).unwrap();
        let plain = x
            .broadcast_matmul(&w.t().unwrap())
            .unwrap()
            .broadcast_add(&b)
            .unwrap();
        assert!(max_abs_diff(&linear(&x, &w, &b).unwrap(), &plain) < 1e-5);
        let with_residual = (&plain + &r).unwrap();
        let activated = plain.gelu_erf().unwrap();
        assert!(max_abs_diff(&linear_gelu(&x, &w, &b).unwrap(), &activated) < 1e-5);
        assert!(linear(&x, &b.unsqueeze(0).unwrap(), &b).is_err());
        // Layer norm over rows of 24: 16 lanes and a remainder of 8.
        let (gamma, beta) = (
            Tensor::randn(1f32, 0.5, 24, &dev).unwrap(),
            Tensor::randn(0f32, 0.5, 24, &dev).unwrap(),
        );
        let norm = candle_nn::LayerNorm::new(gamma.clone(), beta.clone(), 1e-5);
        let want = candle_core::Module::forward(&norm, &with_residual).unwrap();
        let row_norm = RowNorm {
            weight: &gamma,
            bias: &beta,
            eps: 1e-5,
        };
        let got = linear_residual_norm(&x, &w, &b, &r, row_norm).unwrap();
        assert!(max_abs_diff(&got, &want) < 1e-5);
        let short = RowNorm {
            weight: &b.narrow(0, 0, 3).unwrap(),
            ..row_norm
        };
        assert!(linear_residual_norm(&x, &w, &b, &r, short).is_err());
    }

    #[test]
    fn attention_matches_composed_ops() {
        let dev = Device::Cpu;
        let (batch, seq, heads, head_dim) = (3, 7, 2, 4);
        let hidden = heads * head_dim;
        let qkv = Tensor::randn(0f32, 1.0, (batch, seq, 3 * hidden), &dev).unwrap();
        // Sequence lengths 7, 4, 1: padding keys get -1e9.
        let lengths = [7, 4, 1];
        let bias: Vec<f32> = lengths
            .iter()
            .flat_map(|&l| (0..seq).map(move |s| if s < l { 0.0 } else { -1e9 }))
            .collect();
        let bias = Tensor::from_vec(bias, (batch, seq), &dev).unwrap();
        let part = |i: usize| {
            qkv.narrow(2, i * hidden, hidden)
                .unwrap()
                .reshape((batch, seq, heads, head_dim))
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .contiguous()
                .unwrap()
        };
        let (q, k, v) = (part(0), part(1), part(2));
        let scores = q
            .matmul(&k.t().unwrap())
            .unwrap()
            .broadcast_add(&bias.reshape((batch, 1, 1, seq)).unwrap())
            .unwrap();
        let want = candle_nn::ops::softmax_last_dim(&scores)
            .unwrap()
            .matmul(&v)
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .reshape((batch, seq, hidden))
            .unwrap();
        let got = attention(&qkv, heads, Some(&bias)).unwrap();
        assert!(max_abs_diff(&got, &want) < 1e-5);
        // Without padding the bias is not needed.
        let full = attention(&qkv, heads, None).unwrap();
        let first = |t: &Tensor| t.get(0).unwrap();
        assert!(max_abs_diff(&first(&full), &first(&want)) < 1e-5);
        assert!(max_abs_diff(&full, &want) > 1e-3, "padding must matter");
    }
}
