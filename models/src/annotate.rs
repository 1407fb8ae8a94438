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
//!
//! Every stage is made of gradient passes over a few documents. On a CPU the independent
//! passes (the chunks of the target set, the two points of the Hessian-vector product, the
//! batches of the per-document stage) run side by side, one per thread ([`Passes`]): the
//! proxy LM's ops are too small to keep several cores busy inside one pass. Run with
//! `CANDLE_NUM_THREADS=1` (the `delt` CLI sets it): otherwise candle spreads every
//! elementwise op over a pool of spinning threads of its own, which compete with the passes.

use std::ops::ControlFlow;
use std::sync::Mutex;

use candle_core::DType;
use rayon::prelude::*;

use crate::batching::length_batches;
use crate::proxy_lm::{ProxyLm, SequenceGradients};
use crate::random::SplitMix64;
use crate::{ModelError, Result};

/// Documents per forward and backward pass, the unit of work of a thread.
const DOCS_PER_PASS: usize = 8;

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
    /// Gradient passes run at once on a CPU (a GPU runs one at a time). The labels do not
    /// depend on it: passes are combined in a fixed order.
    pub threads: usize,
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

/// The two points of a central difference from `theta` along `v`, the step scaled to norm
/// `eps`: the Hessian-vector product `H v` of a function is
/// `(grad(plus) - grad(minus)) / 2h`. The caller evaluates both gradients (at once, if it
/// can).
pub struct CentralDifference {
    /// theta + h v.
    pub plus: Vec<f64>,
    /// theta - h v.
    pub minus: Vec<f64>,
    h: f64,
}

impl CentralDifference {
    /// The points, or `None` when `v` is zero (then `H v` is zero).
    pub fn new(theta: &[f64], v: &[f64], eps: f64) -> Option<Self> {
        let norm = norm(v);
        if norm == 0.0 {
            return None;
        }
        let h = eps / norm;
        Some(Self {
            plus: theta.iter().zip(v).map(|(t, v)| t + h * v).collect(),
            minus: theta.iter().zip(v).map(|(t, v)| t - h * v).collect(),
            h,
        })
    }

    /// `H v` from the gradients at [`Self::plus`] and [`Self::minus`].
    pub fn hessian_vector_product(&self, grad_plus: &[f64], grad_minus: &[f64]) -> Vec<f64> {
        grad_plus
            .iter()
            .zip(grad_minus)
            .map(|(a, b)| (a - b) / (2.0 * self.h))
            .collect()
    }
}

/// Gradient passes of [`DOCS_PER_PASS`] documents, run side by side on a pool of threads.
/// Each parameter vector in use at once has its own model (0 is the caller's, the others
/// replicas); a pass only reads its model, so threads share them. Pass results are combined
/// in a fixed order, so the thread count changes no result.
struct Passes<'a> {
    pool: rayon::ThreadPool,
    lm: &'a ProxyLm,
    replicas: Vec<ProxyLm>,
}

impl<'a> Passes<'a> {
    fn new(lm: &'a ProxyLm, threads: usize) -> Result<Self> {
        // A GPU queues kernels in order: concurrent passes would only interleave.
        let threads = if lm.device().is_cpu() {
            threads.max(1)
        } else {
            1
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("lqs-pass-{i}"))
            .build()
            .map_err(|e| ModelError::Config(format!("cannot start {threads} threads: {e}")))?;
        Ok(Self {
            pool,
            lm,
            replicas: Vec::new(),
        })
    }

    fn model(&self, i: usize) -> &ProxyLm {
        if i == 0 {
            self.lm
        } else {
            &self.replicas[i - 1]
        }
    }

    /// Puts `theta` into model `i`, making replicas up to it.
    fn load(&mut self, i: usize, theta: &[f64]) -> Result<()> {
        while self.replicas.len() < i {
            self.replicas.push(self.lm.replica()?);
        }
        self.model(i).set_flat_params(theta)
    }

    /// For each group (parameters, documents), the mean loss over its documents and the
    /// gradient of that mean; the passes of all groups run at once.
    fn mean_gradients(&mut self, groups: &[(&[f64], &[&[u32]])]) -> Result<Vec<(f64, Vec<f64>)>> {
        for (i, (theta, _)) in groups.iter().enumerate() {
            self.load(i, theta)?;
        }
        let jobs: Vec<(usize, &[&[u32]])> = groups
            .iter()
            .enumerate()
            .flat_map(|(i, (_, docs))| docs.chunks(DOCS_PER_PASS).map(move |c| (i, c)))
            .collect();
        let this = &*self;
        let passes: Vec<Result<(f64, Vec<f64>)>> = self.pool.install(|| {
            jobs.par_iter()
                .map(|&(i, chunk)| {
                    let lm = this.model(i);
                    let loss = lm.loss(chunk)?;
                    let value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
                    Ok((value, lm.gradient(&loss)?))
                })
                .collect()
        });
        let n = self.lm.num_params();
        let mut sums: Vec<(f64, Vec<f64>)> = groups.iter().map(|_| (0.0, vec![0.0; n])).collect();
        for (&(i, chunk), pass) in jobs.iter().zip(passes) {
            let (value, grad) = pass?;
            let share = chunk.len() as f64 / groups[i].1.len() as f64;
            let (sum_value, sum_grad) = &mut sums[i];
            *sum_value += share * value;
            for (g, c) in sum_grad.iter_mut().zip(grad) {
                *g += share * c;
            }
        }
        Ok(sums)
    }

    /// [`Self::mean_gradients`] of one group.
    fn mean_gradient(&mut self, theta: &[f64], docs: &[&[u32]]) -> Result<(f64, Vec<f64>)> {
        let mut sums = self.mean_gradients(&[(theta, docs)])?;
        Ok(sums.pop().expect("one group, one result"))
    }

    /// Per-document gradient norms (and dots with `direction`) at `theta`, one pass per
    /// batch of documents; `done(n)` after each pass of n documents, which stops the passes
    /// with [`ModelError::Stopped`] when it breaks.
    fn sequence_gradients(
        &mut self,
        theta: &[f64],
        batches: &[Vec<usize>],
        docs: &[Vec<u32>],
        direction: Option<&[f64]>,
        done: &(dyn Fn(usize) -> ControlFlow<()> + Sync),
    ) -> Result<Vec<SequenceGradients>> {
        self.load(0, theta)?;
        let lm = self.lm;
        self.pool.install(|| {
            batches
                .par_iter()
                .map(|batch| {
                    let docs: Vec<&[u32]> = batch.iter().map(|&i| docs[i].as_slice()).collect();
                    let g = lm.sequence_gradients(&docs, direction)?;
                    match done(batch.len()) {
                        ControlFlow::Continue(()) => Ok(g),
                        ControlFlow::Break(()) => Err(ModelError::Stopped),
                    }
                })
                .collect()
        })
    }
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
/// `trajectory`, `co-state`, `documents`); when it breaks, the annotation ends with
/// [`ModelError::Stopped`].
pub fn annotate(
    lm: &ProxyLm,
    proxy: &[Vec<u32>],
    target: &[Vec<u32>],
    options: &AnnotateOptions,
    progress: &mut (dyn FnMut(&str, usize, usize) -> ControlFlow<()> + Send),
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
    let target_refs: Vec<&[u32]> = target.iter().map(Vec::as_slice).collect();
    let batch_docs = |t: usize, seed: u64| -> Vec<&[u32]> {
        batch(proxy.len(), o.batch_size, seed, t)
            .into_iter()
            .map(|i| proxy[i].as_slice())
            .collect()
    };
    let mut passes = Passes::new(lm, o.threads)?;

    // One SGD step on the proxy batch of step `t` (of the batch order seeded with `seed`).
    let sgd_step = |passes: &mut Passes,
                    theta: &mut Vec<f64>,
                    t: usize,
                    seed: u64,
                    lr: f64,
                    stage: &str|
     -> Result<()> {
        let docs = batch_docs(t, seed);
        let (loss, grad) = passes.mean_gradient(theta, &docs)?;
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
        sgd_step(&mut passes, &mut theta, t, !o.seed, o.warmup_lr, "warm-up")?;
        if progress("warm-up", t + 1, o.warmup_steps).is_break() {
            return Err(ModelError::Stopped);
        }
    }

    // 1. Trajectory. Only theta at the scored steps (the segment starts) and theta_T are
    //    kept; the co-state pass recomputes each segment's steps from its start.
    let scored: Vec<usize> = (0..o.steps).step_by(o.interval).collect();
    let mut starts: Vec<Vec<f64>> = Vec::with_capacity(scored.len());
    for t in 0..o.steps {
        if t % o.interval == 0 {
            starts.push(theta.clone());
        }
        sgd_step(&mut passes, &mut theta, t, o.seed, o.lr, "trajectory")?;
        if progress("trajectory", t + 1, o.steps).is_break() {
            return Err(ModelError::Stopped);
        }
    }
    let theta_final = theta;

    // 2. Co-state, segment by segment from the end, keeping lambda_{s+1} for each scored s.
    //    The passes of a step (the two points of H_t lambda and grad J) run at once.
    let (_, mut lambda) = passes.mean_gradient(&theta_final, &target_refs)?;
    let mut lambda_after: Vec<Vec<f64>> = vec![Vec::new(); scored.len()];
    for (j, &first) in scored.iter().enumerate().rev() {
        let end = (first + o.interval).min(o.steps);
        let mut segment = vec![starts[j].clone()];
        for t in first..end - 1 {
            let mut next = segment[segment.len() - 1].clone();
            sgd_step(&mut passes, &mut next, t, o.seed, o.lr, "trajectory")?;
            segment.push(next);
        }
        for t in (first..end).rev() {
            if t == first {
                lambda_after[j] = lambda.clone();
            }
            let theta_t = &segment[t - first];
            let docs = batch_docs(t, o.seed);
            let eps = 1e-3 * norm(theta_t).max(1.0);
            let (grad_j, hv) = match CentralDifference::new(theta_t, &lambda, eps) {
                Some(diff) => {
                    let [(_, grad_j), (_, plus), (_, minus)] = passes
                        .mean_gradients(&[
                            (theta_t, &target_refs),
                            (&diff.plus, &docs),
                            (&diff.minus, &docs),
                        ])?
                        .try_into()
                        .expect("three groups, three results");
                    (grad_j, diff.hessian_vector_product(&plus, &minus))
                }
                None => (
                    passes.mean_gradient(theta_t, &target_refs)?.1,
                    vec![0.0; lambda.len()],
                ),
            };
            for ((l, gj), h) in lambda.iter_mut().zip(&grad_j).zip(&hv) {
                *l += gj - o.lr * h;
            }
            if lambda.iter().any(|x| !x.is_finite()) {
                return Err(ModelError::Config(format!(
                    "co-state became non-finite at step {t}: lower the learning rate"
                )));
            }
            if progress("co-state", o.steps - t, o.steps).is_break() {
                return Err(ModelError::Stopped);
            }
        }
    }

    // 3. Per-document gradients at the scored steps and at theta_T (last, so that `lm`
    //    ends at theta_T), a batch of documents per forward and backward pass.
    let mut checkpoints: Vec<&[f64]> = starts.iter().map(Vec::as_slice).collect();
    checkpoints.push(&theta_final);
    let lengths: Vec<usize> = proxy.iter().map(Vec::len).collect();
    let widest = lengths.iter().copied().max().unwrap_or(1);
    let batches = length_batches(&lengths, DOCS_PER_PASS, DOCS_PER_PASS * widest);
    let total = checkpoints.len() * proxy.len();
    // dots[j][n] = lambda_{s_j + 1} . g_{n, s_j}; norms[j][n] = ||g_n|| at checkpoint j.
    let mut dots = vec![vec![0.0; proxy.len()]; scored.len()];
    let mut norms = vec![vec![0.0; proxy.len()]; checkpoints.len()];
    let reported = Mutex::new((0, progress));
    let done = |n: usize| {
        let mut reported = reported.lock().unwrap_or_else(|e| e.into_inner());
        reported.0 += n;
        let done = reported.0;
        (reported.1)("documents", done, total)
    };
    for (j, theta_j) in checkpoints.iter().enumerate() {
        let direction = lambda_after.get(j).map(Vec::as_slice);
        let results = passes.sequence_gradients(theta_j, &batches, proxy, direction, &done)?;
        for (batch, g) in batches.iter().zip(results) {
            for (k, &i) in batch.iter().enumerate() {
                norms[j][i] = g.norms[k];
                if j < scored.len() {
                    dots[j][i] = g.dots[k];
                }
            }
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
        let grad = |x: &[f64]| -> Vec<f64> { (0..n).map(|i| dot(&a[i], x) + b[i]).collect() };
        let theta: Vec<f64> = (0..n).map(|i| (i as f64).sin()).collect();
        let v: Vec<f64> = (0..n).map(|i| (i as f64 * 1.3).cos()).collect();
        let diff = CentralDifference::new(&theta, &v, 1e-3).unwrap();
        let step: Vec<f64> = diff.plus.iter().zip(&theta).map(|(p, t)| p - t).collect();
        assert!((norm(&step) - 1e-3).abs() < 1e-12, "the step has norm eps");
        let hv = diff.hessian_vector_product(&grad(&diff.plus), &grad(&diff.minus));
        for i in 0..n {
            let want = dot(&a[i], &v);
            assert!((hv[i] - want).abs() < 1e-8, "{i}: {} vs {want}", hv[i]);
        }
        assert!(CentralDifference::new(&theta, &[0.0; 6], 1e-3).is_none());
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
