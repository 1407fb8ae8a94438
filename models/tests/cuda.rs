//! The CUDA path against the CPU path, on tiny random models: the same encoder embeddings,
//! language-model losses, proxy-LM gradients and LQS labels on both devices.
//!
//! Built only with `--features cuda` and meant for a machine with a GPU: without one these
//! tests fail (a CUDA build that cannot reach a GPU has nothing to compare).

#![cfg(feature = "cuda")]

use std::ops::ControlFlow;

use candle_core::{DType, Device, Tensor};
use delt_models::annotate::{AnnotateOptions, annotate};
use delt_models::bert::TextEncoder;
use delt_models::device::DeviceRequest;
use delt_models::llama::{LanguageModel, LlamaConfig};
use delt_models::proxy_lm::ProxyLm;
use delt_models::testing::{self, SAMPLE_TEXTS as TEXTS};

fn gpu() -> Device {
    let device = DeviceRequest::Cuda(0)
        .open()
        .expect("these tests need a CUDA GPU");
    assert!(device.is_cuda());
    assert!(
        DeviceRequest::Auto.open().unwrap().is_cuda(),
        "auto must pick the GPU when one is present"
    );
    device
}

#[test]
fn encoder_embeddings_agree_across_devices() {
    let dir = tempfile::tempdir().unwrap();
    testing::write_bert(dir.path(), 7).unwrap();
    let on_cpu = TextEncoder::load(dir.path(), 64, &Device::Cpu).unwrap();
    let on_gpu = TextEncoder::load(dir.path(), 64, &gpu()).unwrap();
    let a = on_cpu.embed(&TEXTS, 8).unwrap();
    let b = on_gpu
        .embed(&TEXTS, 8)
        .unwrap()
        .to_device(&Device::Cpu)
        .unwrap();
    let diff = testing::max_abs_diff(&a, &b).unwrap();
    eprintln!("encoder: max |cpu - cuda| = {diff:.2e}");
    assert!(diff < 1e-4, "embeddings differ by {diff}");
    assert!(testing::max_abs_diff(&a.get(0).unwrap(), &a.get(2).unwrap()).unwrap() > 1e-2);
}

#[test]
fn language_model_losses_agree_across_devices() {
    let dir = tempfile::tempdir().unwrap();
    testing::write_llama(dir.path(), 9).unwrap();
    let on_cpu = LanguageModel::load(dir.path(), 64, &Device::Cpu).unwrap();
    let on_gpu = LanguageModel::load(dir.path(), 64, &gpu()).unwrap();
    let a = on_cpu.token_losses(&TEXTS, 8).unwrap();
    let b = on_gpu.token_losses(&TEXTS, 8).unwrap();
    for (i, (a, b)) in a.iter().zip(&b).enumerate() {
        match (a, b) {
            (Some(a), Some(b)) => {
                assert_eq!(a.tokens, b.tokens, "text {i}");
                assert!(
                    (a.nll - b.nll).abs() < 1e-4 * a.nll.max(1.0),
                    "text {i}: {a:?} vs {b:?}"
                );
            }
            (a, b) => assert_eq!(a, b, "text {i}"),
        }
    }
}

fn proxy_config() -> LlamaConfig {
    LlamaConfig {
        vocab_size: 20,
        hidden_size: 16,
        intermediate_size: 32,
        ..testing::tiny_llama_config()
    }
}

/// Twelve documents of the vocabulary's first half following a rule, twelve of noise.
fn corpus() -> (Vec<Vec<u32>>, Vec<Vec<u32>>) {
    let rule = |start: u32, step: u32| -> Vec<u32> {
        (0..12u32).map(|i| (start + i * step) % 10).collect()
    };
    let noise = |seed: u32| -> Vec<u32> {
        (0..12u32)
            .map(|i| 10 + (seed * 7 + i * i * 3) % 10)
            .collect()
    };
    let proxy = (0..24u32)
        .map(|i| {
            if i % 2 == 0 {
                rule(i % 10, 1 + i % 3)
            } else {
                noise(i)
            }
        })
        .collect();
    let target = (0..6).map(|i| rule(i, 1 + i % 3)).collect();
    (proxy, target)
}

#[test]
fn proxy_lm_gradients_agree_across_devices() {
    let on_cpu = ProxyLm::new(proxy_config(), 4, DType::F32, &Device::Cpu).unwrap();
    let on_gpu = ProxyLm::new(proxy_config(), 4, DType::F32, &gpu()).unwrap();
    let theta = on_cpu.flat_params().unwrap();
    on_gpu.set_flat_params(&theta).unwrap();
    let (proxy, _) = corpus();
    let docs: Vec<&[u32]> = proxy.iter().take(6).map(Vec::as_slice).collect();
    let a = on_cpu.gradient(&on_cpu.loss(&docs).unwrap()).unwrap();
    let b = on_gpu.gradient(&on_gpu.loss(&docs).unwrap()).unwrap();
    let scale = a.iter().fold(0f64, |m, g| m.max(g.abs()));
    let diff = a
        .iter()
        .zip(&b)
        .fold(0f64, |m, (x, y)| m.max((x - y).abs()));
    eprintln!("proxy LM gradient: max |cpu - cuda| = {diff:.2e} (largest component {scale:.2e})");
    assert!(
        scale > 1e-3 && diff < 1e-4 * scale.max(1.0),
        "{diff} of {scale}"
    );
}

#[test]
fn lqs_labels_agree_across_devices() {
    let (proxy, target) = corpus();
    let options = AnnotateOptions {
        steps: 8,
        interval: 4,
        lr: 0.5,
        batch_size: 6,
        seed: 3,
        warmup_steps: 2,
        warmup_lr: 0.5,
        threads: 2,
    };
    let label = |device: &Device| {
        let lm = ProxyLm::new(proxy_config(), 1, DType::F32, device).unwrap();
        annotate(&lm, &proxy, &target, &options, &mut |_, _, _| {
            ControlFlow::Continue(())
        })
        .unwrap()
    };
    let a = label(&Device::Cpu);
    let b = label(&gpu());
    let diff = a
        .iter()
        .zip(&b)
        .fold(0f64, |m, (x, y)| m.max((x.gamma - y.gamma).abs()));
    eprintln!("LQS labels: max |gamma cpu - gamma cuda| = {diff:.2e}");
    // float32 on two devices: agreement to a few thousandths of a standard deviation.
    assert!(diff < 1e-2, "gamma differs by {diff}");
}

#[test]
fn real_minilm_on_the_gpu_matches_pytorch() {
    let Some(dir) = testing::real_model("all-MiniLM-L6-v2") else {
        eprintln!("skipped: all-MiniLM-L6-v2 is not installed (tests/fetch_models.sh)");
        return;
    };
    let reference = testing::reference("minilm");
    let sentences: Vec<&str> = reference["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    let expected: Vec<Vec<f32>> = serde_json::from_value(reference["embeddings"].clone()).unwrap();
    let encoder = TextEncoder::load(&dir, 256, &gpu()).unwrap();
    let got = encoder
        .embed(&sentences, 4)
        .unwrap()
        .to_device(&Device::Cpu)
        .unwrap();
    let expected = Tensor::new(expected, &Device::Cpu).unwrap();
    let diff = testing::max_abs_diff(&got, &expected).unwrap();
    eprintln!("MiniLM on the GPU vs PyTorch: max abs difference {diff:.2e}");
    assert!(diff < 1e-4, "{diff}");
}
