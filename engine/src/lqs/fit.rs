//! `delt lqs fit`: frozen encoder embeddings, a ridge head chosen by validation Spearman,
//! and the scorer directory that `lqs_score(text)` loads.

use std::path::Path;

use delt_models::bert::TextEncoder;
use delt_models::candle_core::{DType, Device};
use delt_models::lqs::{self, ScorerConfig};

use crate::DeltError;
use crate::progress::progress_bar;

type Result<T> = std::result::Result<T, DeltError>;

/// Spearman rank correlation (average ranks for ties).
pub fn spearman(a: &[f64], b: &[f64]) -> f64 {
    fn ranks(x: &[f64]) -> Vec<f64> {
        let mut order: Vec<usize> = (0..x.len()).collect();
        order.sort_by(|&i, &j| x[i].total_cmp(&x[j]));
        let mut r = vec![0.0; x.len()];
        let mut i = 0;
        while i < order.len() {
            let mut j = i;
            while j + 1 < order.len() && x[order[j + 1]] == x[order[i]] {
                j += 1;
            }
            for k in i..=j {
                r[order[k]] = (i + j) as f64 / 2.0;
            }
            i = j + 1;
        }
        r
    }
    pearson(&ranks(a), &ranks(b))
}

fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let (va, vb): (f64, f64) = (
        a.iter().map(|x| (x - ma).powi(2)).sum(),
        b.iter().map(|y| (y - mb).powi(2)).sum(),
    );
    if va == 0.0 || vb == 0.0 {
        0.0
    } else {
        cov / (va * vb).sqrt()
    }
}

/// Ridge regression y ~ X w + b by the normal equations (Cholesky); `x` is row-major `n x d`.
pub fn ridge(x: &[Vec<f64>], y: &[f64], lambda: f64) -> (Vec<f64>, f64) {
    let (n, d) = (x.len(), x[0].len());
    let mean_x: Vec<f64> = (0..d)
        .map(|j| x.iter().map(|r| r[j]).sum::<f64>() / n as f64)
        .collect();
    let mean_y = y.iter().sum::<f64>() / n as f64;
    let mut a = vec![vec![0.0; d]; d];
    let mut rhs = vec![0.0; d];
    for (row, &yi) in x.iter().zip(y) {
        let c: Vec<f64> = row.iter().zip(&mean_x).map(|(v, m)| v - m).collect();
        for i in 0..d {
            rhs[i] += c[i] * (yi - mean_y);
            for j in 0..=i {
                a[i][j] += c[i] * c[j];
            }
        }
    }
    for (i, row) in a.iter_mut().enumerate() {
        row[i] += lambda * n as f64;
    }
    // Cholesky: a = L L^T (lower triangle in place), then two triangular solves.
    for j in 0..d {
        let s: f64 = (0..j).map(|k| a[j][k] * a[j][k]).sum();
        a[j][j] = (a[j][j] - s).max(1e-12).sqrt();
        for i in j + 1..d {
            let s: f64 = (0..j).map(|k| a[i][k] * a[j][k]).sum();
            a[i][j] = (a[i][j] - s) / a[j][j];
        }
    }
    let mut z = vec![0.0; d];
    for i in 0..d {
        z[i] = (rhs[i] - (0..i).map(|k| a[i][k] * z[k]).sum::<f64>()) / a[i][i];
    }
    let mut w = vec![0.0; d];
    for i in (0..d).rev() {
        w[i] = (z[i] - (i + 1..d).map(|k| a[k][i] * w[k]).sum::<f64>()) / a[i][i];
    }
    let b = mean_y - w.iter().zip(&mean_x).map(|(w, m)| w * m).sum::<f64>();
    (w, b)
}

/// What `delt lqs fit` reports.
pub struct FitReport {
    /// The chosen ridge strength.
    pub lambda: f64,
    /// Spearman correlation of predictions and labels on the validation split, per lambda.
    pub validation: Vec<(f64, f64)>,
    /// Documents used to fit and to validate.
    pub split: (usize, usize),
}

/// What `delt lqs fit` needs besides the labelled texts.
pub struct FitJob<'a> {
    /// Where the labels came from (recorded in scorer.json).
    pub labels_path: &'a Path,
    /// The BERT-family encoder directory.
    pub encoder_dir: &'a Path,
    /// The scorer directory to write.
    pub out: &'a Path,
    /// Tokens the encoder reads per document.
    pub max_tokens: usize,
    /// Ridge strengths to try.
    pub lambdas: &'a [f64],
    /// Share of documents held out for validation.
    pub validation_fraction: f64,
    /// Seed of the split.
    pub seed: u64,
    /// Show a progress bar.
    pub progress: bool,
}

/// Fits the head on frozen, mean-pooled encoder embeddings of the labelled texts: ridge
/// regression for each strength, the one with the best validation Spearman kept; writes the
/// scorer directory.
pub fn fit(job: &FitJob, texts: &[String], gamma: &[f64]) -> Result<FitReport> {
    let FitJob {
        labels_path,
        encoder_dir,
        out,
        max_tokens,
        lambdas,
        validation_fraction,
        seed,
        progress,
    } = *job;
    let encoder = TextEncoder::load(encoder_dir, max_tokens, &Device::Cpu)?;
    let bar = progress_bar(progress);
    bar.set_message("embedding");
    bar.set_length(texts.len() as u64);
    let mut embeddings: Vec<Vec<f64>> = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(64) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let e = encoder.embed(&refs, 32)?;
        let e = e.to_dtype(DType::F64).and_then(|e| e.to_vec2::<f64>());
        embeddings.extend(e.map_err(delt_models::ModelError::from)?);
        if bar.inc(chunk.len() as u64).is_break() {
            return Err(delt_models::ModelError::Stopped.into());
        }
    }
    bar.finish_and_clear();
    // A seeded split: every document whose hash falls below the fraction validates.
    let mut rng = delt_models::random::SplitMix64::new(seed);
    let is_validation: Vec<bool> = (0..texts.len())
        .map(|_| (rng.symmetric() + 1.0) / 2.0 < validation_fraction)
        .collect();
    let pick = |v: bool| -> (Vec<Vec<f64>>, Vec<f64>) {
        (0..texts.len())
            .filter(|&i| is_validation[i] == v)
            .map(|i| (embeddings[i].clone(), gamma[i]))
            .unzip()
    };
    let ((train_x, train_y), (val_x, val_y)) = (pick(false), pick(true));
    if train_x.len() < 2 || val_x.len() < 2 {
        return Err(DeltError::Config(format!(
            "{}: {} labelled documents are too few to fit and validate a scorer",
            labels_path.display(),
            texts.len()
        )));
    }
    let mut best: Option<(f64, f64, Vec<f64>, f64)> = None;
    let mut validation = Vec::new();
    for &lambda in lambdas {
        let (w, b) = ridge(&train_x, &train_y, lambda);
        let predicted: Vec<f64> = val_x
            .iter()
            .map(|x| x.iter().zip(&w).map(|(a, b)| a * b).sum::<f64>() + b)
            .collect();
        let rho = spearman(&predicted, &val_y);
        validation.push((lambda, rho));
        if best.as_ref().is_none_or(|(_, r, _, _)| rho > *r) {
            best = Some((lambda, rho, w, b));
        }
    }
    let (lambda, rho, w, b) =
        best.ok_or_else(|| DeltError::Config("no ridge strength to try".into()))?;
    let encoder_abs =
        std::fs::canonicalize(encoder_dir).unwrap_or_else(|_| encoder_dir.to_path_buf());
    let config = ScorerConfig {
        format: lqs::FORMAT.into(),
        version: lqs::VERSION,
        encoder: encoder_abs.display().to_string(),
        encoder_fingerprint: lqs::encoder_fingerprint(encoder_dir)?,
        head: "head.safetensors".into(),
        hidden_size: w.len(),
        max_tokens,
        pooling: "mean".into(),
        training: serde_json::json!({
            "labels": labels_path.display().to_string(),
            "method": "ridge regression on frozen mean-pooled embeddings",
            "lambda": lambda,
            "validation_spearman": rho,
            "train_documents": train_x.len(),
            "validation_documents": val_x.len(),
            "seed": seed,
        }),
    };
    let weight: Vec<f32> = w.iter().map(|&x| x as f32).collect();
    lqs::save(out, &config, &weight, b as f32)?;
    Ok(FitReport {
        lambda,
        validation,
        split: (train_x.len(), val_x.len()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ridge_recovers_a_linear_function() {
        let x: Vec<Vec<f64>> = (0..50)
            .map(|i| vec![(i as f64).sin(), (i as f64 * 0.7).cos(), i as f64 / 50.0])
            .collect();
        let y: Vec<f64> = x
            .iter()
            .map(|r| 2.0 * r[0] - r[1] + 0.5 * r[2] + 3.0)
            .collect();
        let (w, b) = ridge(&x, &y, 1e-10);
        for (got, want) in w.iter().zip([2.0, -1.0, 0.5]) {
            assert!((got - want).abs() < 1e-6, "{w:?}");
        }
        assert!((b - 3.0).abs() < 1e-6);
    }

    #[test]
    fn spearman_is_rank_correlation() {
        assert!((spearman(&[1.0, 2.0, 3.0, 4.0], &[10.0, 20.0, 30.0, 100.0]) - 1.0).abs() < 1e-12);
        assert!((spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
        let rho = spearman(&[1.0, 1.0, 2.0, 3.0], &[1.0, 2.0, 3.0, 4.0]);
        assert!(rho > 0.9 && rho < 1.0, "{rho}");
    }
}
