//! The log-probability of each target token under its logits: one op with its own gradient.
//!
//! Composed from candle ops (max, subtract, exp, sum, log, subtract, gather), the log-softmax
//! of `(sequences, positions, vocabulary)` logits sweeps a tensor of that size about seven
//! times forward and as many backward, allocating it anew each time; in the proxy LM, whose
//! vocabulary is much wider than its hidden states, these sweeps cost more than the matrix
//! products. On the CPU this op reads each row of logits twice forward (maximum, then the sum
//! of exponentials) and produces the gradient, `g (onehot(target) - softmax(row))`, in one more
//! pass backward; in f32 the exponentials are the vectorised ones of [`crate::cpu_kernels`]
//! (the library's scalar `expf` was a tenth of LQS annotation's time). Only first derivatives
//! are defined, which is all that training and LQS use (Hessian-vector products are finite
//! differences of gradients). Other devices use the composed ops.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, D, Layout, Shape, Tensor};
use rayon::prelude::*;

/// `log softmax(logits)[target]` at every position: `logits` `(.., vocab)` f32 or f64, `targets`
/// `(..)` u32 token ids below `vocab`; the result has the shape of `targets`. Differentiable
/// with respect to `logits`.
pub fn target_log_probs(logits: &Tensor, targets: &Tensor) -> candle_core::Result<Tensor> {
    if logits.device().is_cpu() {
        logits
            .contiguous()?
            .apply_op2(&targets.contiguous()?, TargetLogProbs)
    } else {
        candle_nn::ops::log_softmax(logits, D::Minus1)?
            .gather(&targets.unsqueeze(D::Minus1)?, D::Minus1)?
            .squeeze(D::Minus1)
    }
}

/// The float types the op runs in, with their row kernels.
trait Real: candle_core::WithDType + Send + Sync {
    /// `(max, ln sum_i exp(row_i - max))`.
    fn log_normaliser(row: &[Self]) -> (Self, Self);
    /// `out_i = scale * exp(row_i - shift)`, `shift` at least the row's maximum.
    fn scaled_exp_into(out: &mut [Self], row: &[Self], shift: Self, scale: Self);
}

impl Real for f32 {
    fn log_normaliser(row: &[f32]) -> (f32, f32) {
        crate::cpu_kernels::log_normaliser(row)
    }
    fn scaled_exp_into(out: &mut [f32], row: &[f32], shift: f32, scale: f32) {
        crate::cpu_kernels::scaled_exp_into(out, row, shift, scale)
    }
}

impl Real for f64 {
    fn log_normaliser(row: &[f64]) -> (f64, f64) {
        let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = row.iter().map(|&v| (v - max).exp()).sum();
        (max, sum.ln())
    }
    fn scaled_exp_into(out: &mut [f64], row: &[f64], shift: f64, scale: f64) {
        for (o, &v) in out.iter_mut().zip(row) {
            *o = scale * (v - shift).exp();
        }
    }
}

/// The rows of contiguous logits and the targets, checked against each other.
fn rows<'a, T: candle_core::WithDType>(
    logits: &'a [T],
    logits_layout: &Layout,
    targets: &'a CpuStorage,
    targets_layout: &Layout,
) -> candle_core::Result<(&'a [T], &'a [u32], usize)> {
    let vocab = logits_layout.shape().dims().last().copied().unwrap_or(0);
    let (Some((a, b)), Some((c, d))) = (
        logits_layout.contiguous_offsets(),
        targets_layout.contiguous_offsets(),
    ) else {
        candle_core::bail!("target log-probs: inputs must be contiguous")
    };
    let ids = &targets.as_slice::<u32>()?[c..d];
    if vocab == 0 || (b - a) != ids.len() * vocab {
        candle_core::bail!(
            "target log-probs: logits {:?} do not match targets {:?}",
            logits_layout.shape(),
            targets_layout.shape()
        )
    }
    if let Some(bad) = ids.iter().find(|&&t| t as usize >= vocab) {
        candle_core::bail!("target log-probs: token id {bad} is outside the vocabulary of {vocab}")
    }
    Ok((&logits[a..b], ids, vocab))
}

struct TargetLogProbs;

impl CustomOp2 for TargetLogProbs {
    fn name(&self) -> &'static str {
        "target-log-probs"
    }

    fn cpu_fwd(
        &self,
        logits: &CpuStorage,
        logits_layout: &Layout,
        targets: &CpuStorage,
        targets_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        fn run<T: Real>(
            x: &[T],
            l: &Layout,
            t: &CpuStorage,
            tl: &Layout,
        ) -> candle_core::Result<CpuStorage> {
            let (x, ids, vocab) = rows(x, l, t, tl)?;
            let out: Vec<T> = x
                .par_chunks_exact(vocab)
                .zip(ids.par_iter())
                .map(|(row, &id)| {
                    let (max, log_sum) = T::log_normaliser(row);
                    row[id as usize] - max - log_sum
                })
                .collect();
            Ok(T::to_cpu_storage_owned(out))
        }
        let storage = match logits {
            CpuStorage::F32(x) => run(x, logits_layout, targets, targets_layout)?,
            CpuStorage::F64(x) => run(x, logits_layout, targets, targets_layout)?,
            _ => candle_core::bail!("target log-probs: logits must be f32 or f64"),
        };
        Ok((storage, targets_layout.shape().clone()))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let d_logits = logits.apply_op3_no_bwd(targets, &grad, &TargetLogProbsGrad)?;
        Ok((Some(d_logits), None))
    }
}

/// The gradient with respect to the logits: `g (onehot(target) - softmax(row))` per row.
struct TargetLogProbsGrad;

impl CustomOp3 for TargetLogProbsGrad {
    fn name(&self) -> &'static str {
        "target-log-probs-grad"
    }

    fn cpu_fwd(
        &self,
        logits: &CpuStorage,
        logits_layout: &Layout,
        targets: &CpuStorage,
        targets_layout: &Layout,
        grad: &CpuStorage,
        grad_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        fn run<T: Real>(
            x: &[T],
            l: &Layout,
            t: &CpuStorage,
            tl: &Layout,
            g: &CpuStorage,
            gl: &Layout,
        ) -> candle_core::Result<CpuStorage> {
            let (x, ids, vocab) = rows(x, l, t, tl)?;
            let Some((a, b)) = gl.contiguous_offsets() else {
                candle_core::bail!("target log-probs: the gradient must be contiguous")
            };
            let g = &g.as_slice::<T>()?[a..b];
            let mut out = vec![T::zero(); x.len()];
            out.par_chunks_exact_mut(vocab)
                .zip(x.par_chunks_exact(vocab))
                .zip(ids.par_iter().zip(g.par_iter()))
                .for_each(|((out, row), (&id, &g))| {
                    if g == T::zero() {
                        return;
                    }
                    let (max, log_sum) = T::log_normaliser(row);
                    T::scaled_exp_into(out, row, max + log_sum, T::zero() - g);
                    out[id as usize] += g;
                });
            Ok(T::to_cpu_storage_owned(out))
        }
        let storage = match logits {
            CpuStorage::F32(x) => {
                run(x, logits_layout, targets, targets_layout, grad, grad_layout)?
            }
            CpuStorage::F64(x) => {
                run(x, logits_layout, targets, targets_layout, grad, grad_layout)?
            }
            _ => candle_core::bail!("target log-probs: logits must be f32 or f64"),
        };
        Ok((storage, logits_layout.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Var};

    use super::*;

    fn composed(logits: &Tensor, targets: &Tensor) -> Tensor {
        candle_nn::ops::log_softmax(logits, D::Minus1)
            .unwrap()
            .gather(&targets.unsqueeze(D::Minus1).unwrap(), D::Minus1)
            .unwrap()
            .squeeze(D::Minus1)
            .unwrap()
    }

    /// The gradient of `sum(log_probs * weights)` with respect to `logits`.
    fn weighted_gradient(log_probs: &Tensor, weights: &Tensor, logits: &Var) -> Tensor {
        (log_probs * weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap()
            .get(logits)
            .unwrap()
            .clone()
    }

    #[test]
    fn value_and_gradient_match_the_composed_ops() {
        let dev = Device::Cpu;
        let logits =
            Var::from_tensor(&(Tensor::randn(0f64, 3.0, (2, 5, 11), &dev).unwrap())).unwrap();
        let targets = Tensor::new(&[[0u32, 3, 10, 7, 7], [1, 1, 2, 9, 0]], &dev).unwrap();
        // Weights make the upstream gradient differ by position, zero included.
        let weights = Tensor::new(
            &[[1.0f64, 0.5, 0.0, 2.0, -1.0], [0.3, 0.0, 1.0, 1.0, 4.0]],
            &dev,
        )
        .unwrap();
        let fused = target_log_probs(logits.as_tensor(), &targets).unwrap();
        let plain = composed(logits.as_tensor(), &targets);
        let diff = |a: &Tensor, b: &Tensor| crate::testing::max_abs_diff(a, b).unwrap();
        assert!(diff(&fused, &plain) < 1e-12);
        let grad = |t: &Tensor| weighted_gradient(t, &weights, &logits);
        let (g_fused, g_plain) = (grad(&fused), grad(&plain));
        assert!(diff(&g_fused, &g_plain) < 1e-12);
        assert!(
            g_plain
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
                > 0.1
        );
        // f32 runs too.
        let f32_logits = logits.as_tensor().to_dtype(DType::F32).unwrap();
        let f32_fused = target_log_probs(&f32_logits, &targets).unwrap();
        let f32_plain = composed(&f32_logits, &targets);
        assert!(diff(&f32_fused, &f32_plain) < 1e-5);
    }

    #[test]
    fn f32_rows_of_several_vectors_match_the_composed_ops() {
        // 37 = two 16-lane chunks and a remainder: both paths of the vectorised kernels.
        let dev = Device::Cpu;
        let logits =
            Var::from_tensor(&Tensor::randn(0f32, 4.0, (3, 4, 37), &dev).unwrap()).unwrap();
        let targets =
            Tensor::new(&[[0u32, 36, 17, 5], [16, 1, 2, 33], [9, 9, 31, 0]], &dev).unwrap();
        let weights = Tensor::randn(0f32, 1.0, (3, 4), &dev).unwrap();
        let grad = |t: &Tensor| weighted_gradient(t, &weights, &logits);
        let fused = target_log_probs(logits.as_tensor(), &targets).unwrap();
        let plain = composed(logits.as_tensor(), &targets);
        let diff = |a: &Tensor, b: &Tensor| crate::testing::max_abs_diff(a, b).unwrap();
        assert!(diff(&fused, &plain) < 1e-5, "{}", diff(&fused, &plain));
        let (g_fused, g_plain) = (grad(&fused), grad(&plain));
        // Random f32 inputs summed in another order: 1.2e-6 apart was seen (10 ulps near 1).
        assert!(
            diff(&g_fused, &g_plain) < 1e-5,
            "{}",
            diff(&g_fused, &g_plain)
        );
    }

    #[test]
    fn bad_targets_are_errors() {
        let dev = Device::Cpu;
        let logits = Tensor::zeros((2, 4), DType::F32, &dev).unwrap();
        let outside = Tensor::new(&[0u32, 4], &dev).unwrap();
        assert!(
            target_log_probs(&logits, &outside)
                .unwrap_err()
                .to_string()
                .contains("outside")
        );
        let short = Tensor::new(&[0u32], &dev).unwrap();
        assert!(target_log_probs(&logits, &short).is_err());
    }
}
