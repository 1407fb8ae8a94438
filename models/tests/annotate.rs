//! LQS annotation on a synthetic corpus where the answer is known: proxy documents that
//! follow the target's rule must outscore noise.

use std::ops::ControlFlow;

use delt_models::ModelError;
use delt_models::annotate::{AnnotateOptions, annotate};
use delt_models::candle_core::{DType, Device};
use delt_models::llama::LlamaConfig;
use delt_models::proxy_lm::ProxyLm;
use delt_models::testing;

/// Documents of the "target language": each token is the previous one plus `step` (mod 10).
fn rule_doc(start: u32, step: u32, len: usize) -> Vec<u32> {
    (0..len as u32).map(|i| (start + i * step) % 10).collect()
}

/// Noise: pseudo-random tokens from the other half of the vocabulary.
fn noise_doc(seed: u32, len: usize) -> Vec<u32> {
    (0..len as u32)
        .map(|i| 10 + (seed * 7 + i * i * 3 + i * 5) % 10)
        .collect()
}

/// A proxy LM, proxy documents, which of them follow the rule, and target documents.
struct Setup {
    lm: ProxyLm,
    proxy: Vec<Vec<u32>>,
    relevant: Vec<bool>,
    target: Vec<Vec<u32>>,
}

fn setup() -> Setup {
    let config = LlamaConfig {
        vocab_size: 20,
        hidden_size: 16,
        intermediate_size: 32,
        num_hidden_layers: 1,
        num_key_value_heads: Some(2),
        ..testing::tiny_llama_config()
    };
    let lm = ProxyLm::new(config, 1, DType::F32, &Device::Cpu).unwrap();
    let mut proxy = Vec::new();
    let mut relevant = Vec::new();
    for i in 0..24u32 {
        if i % 2 == 0 {
            proxy.push(rule_doc(i % 10, 1 + (i / 2) % 3, 12));
            relevant.push(true);
        } else {
            proxy.push(noise_doc(i, 12));
            relevant.push(false);
        }
    }
    let target: Vec<Vec<u32>> = (0..6).map(|i| rule_doc(i, 1 + i % 3, 12)).collect();
    Setup {
        lm,
        proxy,
        relevant,
        target,
    }
}

fn options() -> AnnotateOptions {
    AnnotateOptions {
        steps: 12,
        interval: 4,
        lr: 0.5,
        batch_size: 6,
        seed: 3,
        warmup_steps: 0,
        warmup_lr: 0.0,
        threads: 2,
    }
}

#[test]
fn target_like_documents_outscore_noise_and_runs_repeat_exactly() {
    let Setup {
        lm,
        proxy,
        relevant,
        target,
    } = setup();
    let mut stages = Vec::new();
    let labels = annotate(
        &lm,
        &proxy,
        &target,
        &options(),
        &mut |stage, done, total| {
            if done == total {
                stages.push(stage.to_string());
            }
            ControlFlow::Continue(())
        },
    )
    .unwrap();
    assert_eq!(stages, ["trajectory", "co-state", "documents"]);
    // ROC AUC of gamma for "follows the target's rule".
    let (mut wins, mut pairs) = (0.0, 0.0);
    for (a, ra) in labels.iter().zip(&relevant) {
        for (b, rb) in labels.iter().zip(&relevant) {
            if *ra && !*rb {
                pairs += 1.0;
                wins += if a.gamma > b.gamma {
                    1.0
                } else if a.gamma == b.gamma {
                    0.5
                } else {
                    0.0
                };
            }
        }
    }
    let auc = wins / pairs;
    eprintln!(
        "AUC {auc:.3}; gammas {:?}",
        labels
            .iter()
            .map(|l| (l.gamma * 100.0).round() / 100.0)
            .collect::<Vec<_>>()
    );
    assert!(auc >= 0.8, "AUC {auc}");
    assert!(
        labels
            .iter()
            .all(|l| (-3.0..=3.0).contains(&l.gamma) && l.learnability > 0.0)
    );
    let mean: f64 = labels.iter().map(|l| l.gamma).sum::<f64>() / labels.len() as f64;
    assert!(mean.abs() < 1e-9, "z-scored");

    let Setup {
        lm, proxy, target, ..
    } = setup();
    // One thread instead of two: the passes combine in the same order.
    let one_thread = AnnotateOptions {
        threads: 1,
        ..options()
    };
    let again = annotate(&lm, &proxy, &target, &one_thread, &mut |_, _, _| {
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(labels, again, "same inputs and seed, same labels");
}

#[test]
fn bad_inputs_are_refused_with_the_reason() {
    let Setup {
        lm, proxy, target, ..
    } = setup();
    let e = annotate(&lm, &proxy, &[], &options(), &mut |_, _, _| {
        ControlFlow::Continue(())
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("target set is empty"), "{e}");
    let mut short = proxy.clone();
    short[5] = vec![3];
    let e = annotate(&lm, &short, &target, &options(), &mut |_, _, _| {
        ControlFlow::Continue(())
    })
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("proxy document 5 has fewer than two tokens"),
        "{e}"
    );
    let wild = AnnotateOptions {
        lr: 1e6,
        ..options()
    };
    let e = annotate(&lm, &proxy, &target, &wild, &mut |_, _, _| {
        ControlFlow::Continue(())
    })
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("diverged at trajectory step") || e.contains("non-finite"),
        "{e}"
    );
}

#[test]
fn a_progress_callback_that_breaks_stops_the_annotation() {
    let Setup {
        lm, proxy, target, ..
    } = setup();
    let mut calls = 0;
    let stopped = annotate(&lm, &proxy, &target, &options(), &mut |_, _, _| {
        calls += 1;
        if calls == 3 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    assert!(matches!(stopped, Err(ModelError::Stopped)), "{stopped:?}");
    assert_eq!(calls, 3, "no progress after the break");
}
