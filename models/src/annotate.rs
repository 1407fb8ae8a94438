//! LQS labels (Learnability-Quality Scores) from a short training trajectory of the proxy LM,
//! as in `shared/notes/method.md`:
//!
//! 0. Optional warm-up: unrecorded SGD steps, so the proxy LM knows more than unigram
//!    statistics when the trajectory starts.
//! 1. Trajectory: SGD for `steps` steps on proxy batches, theta_0 .. theta_T. Only theta at
//!    the scored steps and theta_T stay in memory; step 2 recomputes the steps in between,
//!    one segment at a time (memory: (T / interval + interval) parameter vectors).
//! 2. Co-state, backwards: lambda_T = grad J(theta_T);
//!    lambda_t = lambda_{t+1} + grad J(theta_t) - lr * H_t lambda_{t+1}, with J the mean loss
//!    on the target set and H_t lambda_{t+1} the Hessian-vector product of step t's batch loss
//!    by central differences of gradients.
//! 3. Per-document gradients g_{n,t} at the scored steps t = 0, k, 2k, ... and at theta_T,
//!    a batch of documents per pass ([`ProxyLm::sequence_gradients`]):
//!    gamma_n = sum_t lambda_{t+1} . g_{n,t} / ||g_{n,t'}||, t' the next scored step, or T for
//!    the last one (the reference divides that one by 1; we use the norm at the final
//!    parameters). Then gamma is z-scored and clipped to [-3, 3].

use crate::batching::length_batches;
use crate::proxy_lm::ProxyLm;
use crate::random::SplitMix64;
use crate::{ModelError, Result};

/// Documents per forward and backward pass.
const DOCS_PER_PASS: usize = 16;

/// The knobs of an annotation run.
#[derive(Debug, Clone, PartialEq)]
pub struct AnnotateOptions {
    /// SGD steps T.
    pub steps: usize,
    /// Score every `interval`-th step (0, interval, 2 * interval, ... < T).
    pub interval: usize,
    /// Constant SGD learning rate.
    pub lr: f64,
    /// Proxy documents per SGD step.
    pub batch_size: usize,
    /// Seed of the batch order.
    pub seed: u64,
    /// SGD steps on proxy batches before the recorded trajectory, so that the proxy LM has
    /// learned something when the trajectory starts (0: start from the initial weights).
    pub warmup_steps: usize,
    /// Learning rate of the warm-up.
    pub warmup_lr: f64,
}

/// One proxy document's label and the parts it is made of.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DocLabel {
    /// z-scored raw gamma, clipped to [-3, 3]: the training label.
    pub gamma: f64,
    /// sum_t lambda_{t+1} . g_{n,t} / ||g_{n,t'}||.
    pub raw_gamma: f64,
    /// sum_t cos(g_{n,t}, lambda_{t+1}): does the document pull towards the target?
    pub quality: f64,
    /// sum_t ||g_{n,t}|| / ||g_{n,t'}||: is it still being learned?
    pub learnability: f64,
    /// sum_t ||lambda_{t+1}|| (the same for every document): how much each step matters.
    pub reliability: f64,
}

/// Hessian-vector product `H v` of the function whose gradient is `grad`, at `theta`, by
/// central differences: (grad(theta + h v) - grad(theta - h v)) / 2h, with h such that the
/// step has norm `eps`.
pub fn hessian_vector_product(
    grad: &mut dyn FnMut(&[f64]) -> Result<Vec<f64>>,
    theta: &[f64],
    v: &[f64],
    eps: f64,
) -> Result<Vec<f64>> {
    let norm = norm(v);
    if norm == 0.0 {
        return Ok(vec![0.0; v.len()]);
    }
    let h = eps / norm;
    let plus: Vec<f64> = theta.iter().zip(v).map(|(t, v)| t + h * v).collect();
    let minus: Vec<f64> = theta.iter().zip(v).map(|(t, v)| t - h * v).collect();
    let (gp, gm) = (grad(&plus)?, grad(&minus)?);
    Ok(gp
        .iter()
        .zip(&gm)
        .map(|(a, b)| (a - b) / (2.0 * h))
        .collect())
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// The proxy documents of SGD step `t`: a seeded permutation, walked in order, reshuffled
/// each epoch.
fn batch(n: usize, batch_size: usize, seed: u64, t: usize) -> Vec<usize> {
    let per_epoch = n.div_ceil(batch_size);
    let epoch = t / per_epoch;
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = SplitMix64::new(seed ^ (epoch as u64).wrapping_mul(0x9e3779b97f4a7c15));
    for i in (1..n).rev() {
        order.swap(i, rng.below(i + 1));
    }
    let start = (t % per_epoch) * batch_size;
    order[start..(start + batch_size).min(n)].to_vec()
}

/// Labels every proxy document, starting from `lm`'s current weights; on success `lm` holds
/// theta_T. `progress(stage, done, total)` is called as work advances (stages: `warm-up`,
/// `trajectory`, `co-state`, `documents`).
pub fn annotate(
    lm: &ProxyLm,
    proxy: &[Vec<u32>],
    target: &[Vec<u32>],
    options: &AnnotateOptions,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<Vec<DocLabel>> {
    let o = options;
    if target.is_empty() {
        return Err(ModelError::Config(
            "the target set is empty: LQS needs target documents to aim at".into(),
        ));
    }
    if proxy.is_empty() || o.steps == 0 || o.interval == 0 || o.batch_size == 0 {
        return Err(ModelError::Config(
            "annotation needs proxy documents, steps, interval and batch size > 0".into(),
        ));
    }
    for (what, docs) in [("proxy", proxy), ("target", target)] {
        if let Some(i) = docs.iter().position(|d| d.len() < 2) {
            return Err(ModelError::Config(format!(
                "{what} document {i} has fewer than two tokens: nothing to predict; drop such documents first"
            )));
        }
    }
    let refs = |idx: &[usize], docs: &[Vec<u32>]| -> Vec<Vec<u32>> {
        idx.iter().map(|&i| docs[i].clone()).collect()
    };
    let target_refs: Vec<&[u32]> = target.iter().map(Vec::as_slice).collect();
    // The mean loss over `docs` and its gradient, DOCS_PER_PASS documents per backward pass
    // (the target set is one big batch otherwise; memory stays that of one small batch).
    let gradient_at = |theta: &[f64], docs: &[&[u32]]| -> Result<(f64, Vec<f64>)> {
        lm.set_flat_params(theta)?;
        let (mut value, mut grad) = (0.0, vec![0.0; lm.num_params()]);
        for chunk in docs.chunks(DOCS_PER_PASS) {
            let share = chunk.len() as f64 / docs.len() as f64;
            let loss = lm.loss(chunk)?;
            value += share * loss.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
            for (g, c) in grad.iter_mut().zip(lm.gradient(&loss)?) {
                *g += share * c;
            }
        }
        Ok((value, grad))
    };

    // One SGD step on the proxy batch of step `t` (of the batch order seeded with `seed`).
    let sgd_step = |theta: &mut Vec<f64>,
                    t: usize,
                    seed: u64,
                    lr: f64,
                    stage: &str|
     -> Result<()> {
        let docs = refs(&batch(proxy.len(), o.batch_size, seed, t), proxy);
        let docs: Vec<&[u32]> = docs.iter().map(Vec::as_slice).collect();
        let (loss, grad) = gradient_at(theta, &docs)?;
        if !loss.is_finite() || grad.iter().any(|g| !g.is_finite()) {
            return Err(ModelError::Config(format!(
                "training diverged at {stage} step {t} (loss {loss}): lower the learning rate (lr = {lr})"
            )));
        }
        for (p, g) in theta.iter_mut().zip(&grad) {
            *p -= lr * g;
        }
        Ok(())
    };

    // 0. Warm-up, not recorded.
    let mut theta = lm.flat_params()?;
    for t in 0..o.warmup_steps {
        sgd_step(&mut theta, t, !o.seed, o.warmup_lr, "warm-up")?;
        progress("warm-up", t + 1, o.warmup_steps);
    }

    // 1. Trajectory. Only theta at the scored steps (the segment starts) and theta_T are
    //    kept; the co-state pass recomputes each segment's steps from its start.
    let scored: Vec<usize> = (0..o.steps).step_by(o.interval).collect();
    let mut starts: Vec<Vec<f64>> = Vec::with_capacity(scored.len());
    for t in 0..o.steps {
        if t % o.interval == 0 {
            starts.push(theta.clone());
        }
        sgd_step(&mut theta, t, o.seed, o.lr, "trajectory")?;
        progress("trajectory", t + 1, o.steps);
    }
    let theta_final = theta;

    // 2. Co-state, segment by segment from the end, keeping lambda_{s+1} for each scored s.
    let mut lambda = gradient_at(&theta_final, &target_refs)?.1;
    let mut lambda_after: Vec<Vec<f64>> = vec![Vec::new(); scored.len()];
    for (j, &first) in scored.iter().enumerate().rev() {
        let end = (first + o.interval).min(o.steps);
        let mut segment = vec![starts[j].clone()];
        for t in first..end - 1 {
            let mut next = segment[segment.len() - 1].clone();
            sgd_step(&mut next, t, o.seed, o.lr, "trajectory")?;
            segment.push(next);
        }
        for t in (first..end).rev() {
            if t == first {
                lambda_after[j] = lambda.clone();
            }
            let theta_t = &segment[t - first];
            let docs = refs(&batch(proxy.len(), o.batch_size, o.seed, t), proxy);
            let docs: Vec<&[u32]> = docs.iter().map(Vec::as_slice).collect();
            let eps = 1e-3 * norm(theta_t).max(1.0);
            let hv = hessian_vector_product(
                &mut |p| Ok(gradient_at(p, &docs)?.1),
                theta_t,
                &lambda,
                eps,
            )?;
            let grad_j = gradient_at(theta_t, &target_refs)?.1;
            for ((l, gj), h) in lambda.iter_mut().zip(&grad_j).zip(&hv) {
                *l += gj - o.lr * h;
            }
            if lambda.iter().any(|x| !x.is_finite()) {
                return Err(ModelError::Config(format!(
                    "co-state became non-finite at step {t}: lower the learning rate"
                )));
            }
            progress("co-state", o.steps - t, o.steps);
        }
    }

    // 3. Per-document gradients at the scored steps and at theta_T, a batch of documents
    //    per forward and backward pass.
    let mut checkpoints: Vec<&[f64]> = starts.iter().map(Vec::as_slice).collect();
    checkpoints.push(&theta_final);
    let lengths: Vec<usize> = proxy.iter().map(Vec::len).collect();
    let widest = lengths.iter().copied().max().unwrap_or(1);
    let batches = length_batches(&lengths, DOCS_PER_PASS, DOCS_PER_PASS * widest);
    let total = checkpoints.len() * proxy.len();
    // dots[j][n] = lambda_{s_j + 1} . g_{n, s_j}; norms[j][n] = ||g_n|| at checkpoint j.
    let mut dots = vec![vec![0.0; proxy.len()]; scored.len()];
    let mut norms = vec![vec![0.0; proxy.len()]; checkpoints.len()];
    let mut done = 0;
    for (j, theta_j) in checkpoints.iter().enumerate() {
        lm.set_flat_params(theta_j)?;
        let direction = lambda_after.get(j).map(Vec::as_slice);
        for batch in &batches {
            let docs: Vec<&[u32]> = batch.iter().map(|&i| proxy[i].as_slice()).collect();
            let g = lm.sequence_gradients(&docs, direction)?;
            for (k, &i) in batch.iter().enumerate() {
                norms[j][i] = g.norms[k];
                if j < scored.len() {
                    dots[j][i] = g.dots[k];
                }
            }
            done += batch.len();
            progress("documents", done, total);
        }
    }
    let lambda_norms: Vec<f64> = lambda_after.iter().map(|l| norm(l)).collect();
    let mut labels: Vec<DocLabel> = (0..proxy.len())
        .map(|n| {
            let mut label = DocLabel {
                gamma: 0.0,
                raw_gamma: 0.0,
                quality: 0.0,
                learnability: 0.0,
                reliability: 0.0,
            };
            for j in 0..scored.len() {
                let (g_now, g_next) = (norms[j][n], norms[j + 1][n].max(1e-12));
                label.raw_gamma += dots[j][n] / g_next;
                label.quality += dots[j][n] / (g_now * lambda_norms[j]).max(1e-12);
                label.learnability += g_now / g_next;
                label.reliability += lambda_norms[j];
            }
            label
        })
        .collect();
    let count = labels.len() as f64;
    let mean = labels.iter().map(|l| l.raw_gamma).sum::<f64>() / count;
    let sd = (labels
        .iter()
        .map(|l| (l.raw_gamma - mean).powi(2))
        .sum::<f64>()
        / count)
        .sqrt();
    for l in &mut labels {
        l.gamma = if sd > 0.0 {
            ((l.raw_gamma - mean) / sd).clamp(-3.0, 3.0)
        } else {
            0.0
        };
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dot(a: &[f64], b: &[f64]) -> f64 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn hvp_of_a_quadratic_is_its_matrix_times_v() {
        // f(x) = 1/2 x^T A x + b^T x with a fixed symmetric A: grad = A x + b, Hessian = A.
        let n = 6;
        let a: Vec<Vec<f64>> = (0..n)
            .map(|i| {
                (0..n)
                    .map(|j| ((i + 1) * (j + 1)) as f64 / 7.0 + if i == j { 2.0 } else { 0.0 })
                    .collect()
            })
            .collect();
        let b: Vec<f64> = (0..n).map(|i| i as f64 - 2.5).collect();
        let mut grad =
            |x: &[f64]| -> Result<Vec<f64>> { Ok((0..n).map(|i| dot(&a[i], x) + b[i]).collect()) };
        let theta: Vec<f64> = (0..n).map(|i| (i as f64).sin()).collect();
        let v: Vec<f64> = (0..n).map(|i| (i as f64 * 1.3).cos()).collect();
        let hv = hessian_vector_product(&mut grad, &theta, &v, 1e-3).unwrap();
        for i in 0..n {
            let want = dot(&a[i], &v);
            assert!((hv[i] - want).abs() < 1e-8, "{i}: {} vs {want}", hv[i]);
        }
        assert_eq!(
            hessian_vector_product(&mut grad, &theta, &[0.0; 6], 1e-3).unwrap(),
            vec![0.0; 6]
        );
    }

    #[test]
    fn batches_cover_each_epoch_once_and_depend_on_the_seed() {
        let per_epoch: Vec<usize> = (0..4).flat_map(|t| batch(10, 3, 7, t)).collect();
        let mut sorted = per_epoch.clone();
        sorted.sort();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        assert_ne!(batch(10, 3, 7, 0), batch(10, 3, 8, 0));
        assert_eq!(batch(10, 3, 7, 5), batch(10, 3, 7, 5));
    }
}
