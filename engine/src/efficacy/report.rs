//! The efficacy summary: mean and standard deviation of the final losses per arm over the
//! seeds, and paired differences against the baseline arm (same seed, same initialisation),
//! as a Markdown table.

use super::Run;

/// Mean and sample standard deviation (0 for one value).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stat {
    /// Mean.
    pub mean: f64,
    /// Sample standard deviation (n - 1).
    pub sd: f64,
}

impl Stat {
    /// Of `values` (at least one).
    pub fn of(values: &[f64]) -> Self {
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let sd = if values.len() > 1 {
            (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
        } else {
            0.0
        };
        Self { mean, sd }
    }

    fn show(&self) -> String {
        format!("{:.4} ± {:.4}", self.mean, self.sd)
    }
}

/// One arm over all seeds.
#[derive(Debug, Clone)]
pub struct ArmSummary {
    /// Arm name.
    pub arm: String,
    /// Distinct documents.
    pub documents: usize,
    /// Optimiser steps.
    pub steps: usize,
    /// Final target loss.
    pub target: Stat,
    /// Final held-out loss.
    pub heldout: Stat,
    /// Target loss minus the baseline's, paired by seed (None for the baseline itself).
    pub delta_target: Option<Stat>,
    /// Held-out loss minus the baseline's, paired by seed.
    pub delta_heldout: Option<Stat>,
}

/// Summaries in the arms' order; `baseline` names the arm differences are taken against.
pub fn summarize(runs: &[Run], baseline: &str) -> Vec<ArmSummary> {
    let mut arms: Vec<&str> = Vec::new();
    for r in runs {
        if !arms.contains(&r.arm.as_str()) {
            arms.push(&r.arm);
        }
    }
    let of = |arm: &str| -> Vec<&Run> { runs.iter().filter(|r| r.arm == arm).collect() };
    let base = of(baseline);
    let paired = |mine: &[&Run], value: fn(&Run) -> f64| -> Stat {
        let diffs: Vec<f64> = mine
            .iter()
            .filter_map(|r| {
                base.iter()
                    .find(|b| b.seed == r.seed)
                    .map(|b| value(r) - value(b))
            })
            .collect();
        Stat::of(&diffs)
    };
    arms.into_iter()
        .map(|arm| {
            let mine = of(arm);
            let is_base = arm == baseline || base.is_empty();
            ArmSummary {
                arm: arm.to_string(),
                documents: mine[0].documents,
                steps: mine[0].steps,
                target: Stat::of(&mine.iter().map(|r| r.target_loss).collect::<Vec<_>>()),
                heldout: Stat::of(&mine.iter().map(|r| r.heldout_loss).collect::<Vec<_>>()),
                delta_target: (!is_base).then(|| paired(&mine, |r| r.target_loss)),
                delta_heldout: (!is_base).then(|| paired(&mine, |r| r.heldout_loss)),
            }
        })
        .collect()
}

/// The Markdown table (losses are mean token NLL in nats; lower is better).
pub fn markdown(summaries: &[ArmSummary], baseline: &str, seeds: usize) -> String {
    let mut out = format!(
        "| arm | documents | steps | target loss | held-out loss | Δ target vs {baseline} | Δ held-out vs {baseline} |\n\
         |---|---:|---:|---|---|---|---|\n"
    );
    for s in summaries {
        let delta = |d: &Option<Stat>| {
            d.map_or("—".to_string(), |d| {
                format!("{:+.4} ± {:.4}", d.mean, d.sd)
            })
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            s.arm,
            s.documents,
            s.steps,
            s.target.show(),
            s.heldout.show(),
            delta(&s.delta_target),
            delta(&s.delta_heldout)
        ));
    }
    out.push_str(&format!(
        "\nMean ± sample sd over {seeds} seed(s) of the final mean token loss (nats, lower is better); \
         Δ: paired difference with the {baseline} arm at the same seed.\n"
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(arm: &str, seed: u64, target: f64) -> Run {
        Run {
            arm: arm.into(),
            seed,
            documents: 10,
            steps: 5,
            tokens: 100,
            target_loss: target,
            heldout_loss: target + 1.0,
            curve: vec![],
            train_losses: vec![],
            seconds: 0.0,
        }
    }

    #[test]
    fn differences_are_paired_by_seed() {
        // The arm is always 0.1 below the baseline, though seeds differ by a lot.
        let runs = vec![
            run("shuffle", 1, 5.0),
            run("fold", 1, 4.9),
            run("shuffle", 2, 6.0),
            run("fold", 2, 5.9),
        ];
        let s = summarize(&runs, "shuffle");
        assert_eq!(s[0].arm, "shuffle");
        assert!(s[0].delta_target.is_none());
        assert!((s[1].target.sd - 0.5f64.sqrt()).abs() < 1e-12);
        let d = s[1].delta_target.unwrap();
        assert!((d.mean + 0.1).abs() < 1e-12 && d.sd < 1e-12, "{d:?}");
        let table = markdown(&s, "shuffle", 2);
        assert!(
            table.contains("| fold | 10 | 5 | 5.4000 ± 0.7071 |"),
            "{table}"
        );
        assert!(table.contains("-0.1000 ± 0.0000"), "{table}");
    }
}
