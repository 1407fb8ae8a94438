//! The proxy LM's gradients against central finite differences (float64, tiny model), and its
//! saved checkpoints against the inference model.

use delt_models::candle_core::{DType, Device};
use delt_models::llama::{LanguageModel, LlamaConfig};
use delt_models::proxy_lm::ProxyLm;
use delt_models::testing;

fn tiny_config(vocab: usize) -> LlamaConfig {
    LlamaConfig {
        vocab_size: vocab,
        ..testing::tiny_llama_config()
    }
}

/// Scales the default init up so the loss surface is far from flat: finite differences then
/// test something.
fn model(seed: u64) -> ProxyLm {
    let lm = ProxyLm::new(tiny_config(17), seed, DType::F64, &Device::Cpu).unwrap();
    let theta: Vec<f64> = lm.flat_params().unwrap().iter().map(|x| x * 40.0).collect();
    lm.set_flat_params(&theta).unwrap();
    lm
}

fn loss_at(lm: &ProxyLm, theta: &[f64], doc: &[u32]) -> f64 {
    lm.set_flat_params(theta).unwrap();
    lm.loss(&[doc]).unwrap().to_scalar::<f64>().unwrap()
}

#[test]
fn per_document_gradients_match_finite_differences() {
    let lm = model(3);
    let theta = lm.flat_params().unwrap();
    let n = theta.len();
    for doc in [&[1u32, 5, 9, 2, 16, 3][..], &[4, 4, 4, 11, 0, 7, 7, 1, 12]] {
        lm.set_flat_params(&theta).unwrap();
        let grad = lm.gradient(&lm.loss(&[doc]).unwrap()).unwrap();
        assert!(
            grad.iter().any(|g| g.abs() > 1e-3),
            "a zero gradient tests nothing"
        );
        let h = 1e-5;
        // Single coordinates, spread over every parameter tensor.
        let mut worst = 0f64;
        for k in (0..n).step_by(n / 40) {
            let (mut plus, mut minus) = (theta.clone(), theta.clone());
            plus[k] += h;
            minus[k] -= h;
            let fd = (loss_at(&lm, &plus, doc) - loss_at(&lm, &minus, doc)) / (2.0 * h);
            let err = (fd - grad[k]).abs() / fd.abs().max(grad[k].abs()).max(1e-4);
            worst = worst.max(err);
        }
        // A random direction: covers all parameters at once.
        let v: Vec<f64> = (0..n)
            .map(|i| ((i * 7919 % 1000) as f64 / 500.0) - 1.0)
            .collect();
        let plus: Vec<f64> = theta.iter().zip(&v).map(|(t, v)| t + h * v).collect();
        let minus: Vec<f64> = theta.iter().zip(&v).map(|(t, v)| t - h * v).collect();
        let fd = (loss_at(&lm, &plus, doc) - loss_at(&lm, &minus, doc)) / (2.0 * h);
        let analytic: f64 = grad.iter().zip(&v).map(|(g, v)| g * v).sum();
        let directional = (fd - analytic).abs() / fd.abs().max(analytic.abs());
        eprintln!(
            "doc of {} tokens: worst coordinate error {worst:.2e}, directional {directional:.2e}",
            doc.len()
        );
        assert!(worst < 1e-3, "coordinate relative error {worst}");
        assert!(
            directional < 1e-3,
            "directional relative error {directional}: {fd} vs {analytic}"
        );
    }
}

#[test]
fn batch_loss_is_the_mean_of_document_losses() {
    let lm = model(5);
    let docs: [&[u32]; 3] = [&[1, 2, 3], &[4, 5, 6, 7, 8, 9, 10], &[11, 12]];
    let each = lm.sequence_losses(&docs).unwrap().to_vec1::<f64>().unwrap();
    for (doc, l) in docs.iter().zip(&each) {
        let alone = lm.loss(&[doc]).unwrap().to_scalar::<f64>().unwrap();
        assert!(
            (alone - l).abs() < 1e-10,
            "padding changed a loss: {alone} vs {l}"
        );
    }
    let mean = lm.loss(&docs).unwrap().to_scalar::<f64>().unwrap();
    assert!((mean - each.iter().sum::<f64>() / 3.0).abs() < 1e-12);
    assert!(
        lm.loss(&[&[3u32][..]]).is_err(),
        "one token has nothing to predict"
    );
}

#[test]
fn saved_checkpoints_load_as_inference_models() {
    let dir = tempfile::tempdir().unwrap();
    // The tiny test tokenizer (with <s>) defines the vocabulary.
    testing::write_llama(dir.path(), 1).unwrap();
    let vocab = 3 + testing::WORDS.len();
    let mut config = tiny_config(vocab);
    config.hidden_size = 16;
    let lm = ProxyLm::new(config, 9, DType::F32, &Device::Cpu).unwrap();
    let theta: Vec<f64> = lm.flat_params().unwrap().iter().map(|x| x * 30.0).collect();
    lm.set_flat_params(&theta).unwrap();
    lm.save(dir.path()).unwrap();
    let loaded = LanguageModel::load(dir.path(), 64, &Device::Cpu).unwrap();
    let text = "the data is in the model and the model is in the data";
    let ids = loaded.tokenizer.encode(&[text]).unwrap();
    let want = lm.loss(&[&ids[0]]).unwrap().to_scalar::<f32>().unwrap() as f64;
    let got = loaded.token_losses(&[text], 1).unwrap()[0].unwrap().mean();
    assert!(
        (got - want).abs() < 1e-4 * want,
        "inference {got} vs training {want}"
    );
}

#[test]
fn batched_sequence_gradients_equal_one_backward_per_document() {
    let lm = model(7);
    let theta = lm.flat_params().unwrap();
    // Different lengths (padding), a repeated token (the embedding's scatter-add).
    let docs: [&[u32]; 4] = [
        &[1, 5, 9, 2, 16, 3],
        &[4, 4, 4, 11, 0, 7, 7, 1, 12],
        &[13, 2],
        &[0, 0, 6, 6, 6],
    ];
    let direction: Vec<f64> = (0..theta.len())
        .map(|i| ((i * 7919 % 1000) as f64 / 500.0) - 1.0)
        .collect();
    let batched = lm.sequence_gradients(&docs, Some(&direction)).unwrap();
    for (k, doc) in docs.iter().enumerate() {
        lm.set_flat_params(&theta).unwrap();
        let g = lm.gradient(&lm.loss(&[doc]).unwrap()).unwrap();
        let norm = g.iter().map(|x| x * x).sum::<f64>().sqrt();
        let dot: f64 = g.iter().zip(&direction).map(|(a, b)| a * b).sum();
        assert!(norm > 1e-2, "a zero gradient tests nothing");
        let (dn, dd) = (
            (batched.norms[k] - norm).abs() / norm,
            (batched.dots[k] - dot).abs() / dot.abs().max(1e-9),
        );
        eprintln!("doc {k}: norm {norm:.6} (rel err {dn:.1e}), dot {dot:.6} (rel err {dd:.1e})");
        assert!(
            dn < 1e-9 && dd < 1e-9,
            "doc {k}: {batched:?} vs {norm} {dot}"
        );
    }
    let plain = lm.sequence_gradients(&docs, None).unwrap();
    assert_eq!(plain.norms, batched.norms);
    assert_eq!(plain.dots, vec![0.0; docs.len()]);
    assert!(lm.sequence_gradients(&docs, Some(&direction[1..])).is_err());
}

#[test]
fn saved_checkpoints_load_for_more_training() {
    let dir = tempfile::tempdir().unwrap();
    let lm = model(11);
    lm.save(dir.path()).unwrap();
    let loaded = ProxyLm::load(dir.path(), DType::F64, &Device::Cpu).unwrap();
    assert_eq!(loaded.config(), lm.config());
    // Saved as float32.
    let (a, b) = (lm.flat_params().unwrap(), loaded.flat_params().unwrap());
    assert!(
        a.iter()
            .zip(&b)
            .all(|(x, y)| (x - y).abs() <= 1e-6 * x.abs().max(1e-3))
    );
    assert_ne!(
        a,
        ProxyLm::new(tiny_config(17), 12, DType::F64, &Device::Cpu)
            .unwrap()
            .flat_params()
            .unwrap()
    );
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let err = ProxyLm::load(dir.path(), DType::F64, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("model.safetensors"), "{err}");
}
