//! Training the small LM on documents in exactly the order given: the model side of the
//! efficacy experiment (`delt bench efficacy`). No shuffling: step i trains on documents
//! `i * batch_size .. (i + 1) * batch_size` of the stream. AdamW, linear warm-up, cosine
//! decay; losses on evaluation sets are measured as training goes.

use std::f64::consts::PI;
use std::ops::ControlFlow;

use candle_core::DType;
use candle_nn::{AdamW, Optimizer, ParamsAdamW};

use crate::batching::length_batches;
use crate::proxy_lm::ProxyLm;
use crate::{ModelError, Result};

/// The knobs of a training run.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainOptions {
    /// Documents per step.
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Steps of linear warm-up to the peak.
    pub warmup_steps: usize,
    /// The cosine decay ends at `lr * min_lr_ratio` after the last step.
    pub min_lr_ratio: f64,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Evaluate before training, every `eval_every` steps and after the last step.
    pub eval_every: usize,
}

impl TrainOptions {
    /// The learning rate of step `step` (0-based) of `total`.
    pub fn learning_rate(&self, step: usize, total: usize) -> f64 {
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let decay = total.saturating_sub(self.warmup_steps).max(1);
        let done = (step - self.warmup_steps) as f64 / decay as f64;
        let min = self.lr * self.min_lr_ratio;
        min + 0.5 * (self.lr - min) * (1.0 + (PI * done).cos())
    }
}

/// Losses on the evaluation sets after `step` steps (`tokens` training tokens seen).
#[derive(Debug, Clone, PartialEq)]
pub struct EvalPoint {
    /// Steps done.
    pub step: usize,
    /// Predicted training tokens seen.
    pub tokens: usize,
    /// Mean token loss on each evaluation set, in the order given.
    pub losses: Vec<f64>,
}

/// What a training run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainCurve {
    /// Training loss of each step's batch.
    pub train_losses: Vec<f64>,
    /// Evaluations, first before any step, last after the last step.
    pub evals: Vec<EvalPoint>,
}

/// Mean NLL over all predicted tokens of `docs` (documents of fewer than two tokens predict
/// nothing and are skipped).
pub fn mean_token_loss(lm: &ProxyLm, docs: &[Vec<u32>]) -> Result<f64> {
    let docs: Vec<&[u32]> = docs
        .iter()
        .filter(|d| d.len() >= 2)
        .map(Vec::as_slice)
        .collect();
    let lengths: Vec<usize> = docs.iter().map(|d| d.len()).collect();
    let widest = lengths.iter().copied().max().unwrap_or(1);
    let (mut sum, mut tokens) = (0.0, 0usize);
    for batch in length_batches(&lengths, 32, 32 * widest) {
        let seqs: Vec<&[u32]> = batch.iter().map(|&i| docs[i]).collect();
        let losses = lm
            .sequence_losses(&seqs)?
            .to_dtype(DType::F64)?
            .to_vec1::<f64>()?;
        for (loss, seq) in losses.iter().zip(&seqs) {
            sum += loss * (seq.len() - 1) as f64;
            tokens += seq.len() - 1;
        }
    }
    Ok(sum / tokens.max(1) as f64)
}

/// Trains `lm` on `stream` in order, `batch_size` documents per step, and evaluates the
/// mean token loss of each of `eval_sets`. `progress(done, total)` follows the steps; when it
/// breaks, training ends with [`ModelError::Stopped`].
pub fn train(
    lm: &ProxyLm,
    stream: &[&[u32]],
    eval_sets: &[&[Vec<u32>]],
    options: &TrainOptions,
    progress: &mut dyn FnMut(usize, usize) -> ControlFlow<()>,
) -> Result<TrainCurve> {
    let o = options;
    if o.batch_size == 0 || o.eval_every == 0 {
        return Err(ModelError::Config(
            "training needs a batch size and an evaluation interval > 0".into(),
        ));
    }
    if let Some(i) = stream.iter().position(|d| d.len() < 2) {
        return Err(ModelError::Config(format!(
            "training document {i} has fewer than two tokens: nothing to predict"
        )));
    }
    let total = stream.len().div_ceil(o.batch_size);
    let mut optimizer = AdamW::new(
        lm.vars(),
        ParamsAdamW {
            lr: o.learning_rate(0, total),
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: o.weight_decay,
        },
    )?;
    let evaluate = |step: usize, tokens: usize| -> Result<EvalPoint> {
        let losses = eval_sets
            .iter()
            .map(|docs| mean_token_loss(lm, docs))
            .collect::<Result<_>>()?;
        Ok(EvalPoint {
            step,
            tokens,
            losses,
        })
    };
    let mut curve = TrainCurve {
        train_losses: Vec::with_capacity(total),
        evals: vec![evaluate(0, 0)?],
    };
    let mut tokens = 0;
    for (step, batch) in stream.chunks(o.batch_size).enumerate() {
        optimizer.set_learning_rate(o.learning_rate(step, total));
        let loss = lm.token_loss(batch)?;
        let value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        if !value.is_finite() {
            return Err(ModelError::Config(format!(
                "training diverged at step {step} (loss {value}): lower the learning rate (peak {})",
                o.lr
            )));
        }
        optimizer.backward_step(&loss)?;
        curve.train_losses.push(value);
        tokens += batch.iter().map(|d| d.len() - 1).sum::<usize>();
        if (step + 1) % o.eval_every == 0 || step + 1 == total {
            curve.evals.push(evaluate(step + 1, tokens)?);
        }
        if progress(step + 1, total).is_break() {
            return Err(ModelError::Stopped);
        }
    }
    Ok(curve)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warm_up_then_cosine_down_to_the_floor() {
        let o = TrainOptions {
            batch_size: 1,
            lr: 1e-3,
            warmup_steps: 10,
            min_lr_ratio: 0.1,
            weight_decay: 0.0,
            eval_every: 1,
        };
        assert!((o.learning_rate(0, 100) - 1e-4).abs() < 1e-12);
        assert!((o.learning_rate(9, 100) - 1e-3).abs() < 1e-12);
        assert!((o.learning_rate(10, 100) - 1e-3).abs() < 1e-12);
        assert!(
            (o.learning_rate(55, 100) - 0.55e-3).abs() < 1e-12,
            "half way"
        );
        assert!((o.learning_rate(100, 100) - 1e-4).abs() < 1e-12);
        let rates: Vec<f64> = (10..100).map(|s| o.learning_rate(s, 100)).collect();
        assert!(rates.windows(2).all(|w| w[1] < w[0]));
    }
}
