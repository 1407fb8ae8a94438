//! Llama-family language models: tiny random ones for the mechanics, SmolLM2 GGUF against a
//! value computed independently with Hugging Face transformers
//! (tests/fixtures/models/reference.json).

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use delt_models::llama::{LanguageModel, Quantized};
use delt_models::testing::{self, SAMPLE_TEXTS as TEXTS, WORDS};
use serde_json::Value;

#[test]
fn a_document_scores_the_same_alone_or_in_a_batch() {
    let dir = tempfile::tempdir().unwrap();
    testing::write_llama(dir.path(), 9).unwrap();
    let lm = LanguageModel::load(dir.path(), 64, &Device::Cpu).unwrap();
    let together = lm.token_losses(&TEXTS, 8).unwrap();
    for (i, text) in TEXTS.iter().enumerate() {
        let alone = lm.token_losses(&[text], 1).unwrap()[0];
        match (alone, together[i]) {
            (Some(a), Some(b)) => {
                assert_eq!(a.tokens, b.tokens);
                assert!(
                    (a.nll - b.nll).abs() < 1e-4 * a.nll.max(1.0),
                    "text {i}: {a:?} vs {b:?}"
                );
            }
            (a, b) => assert_eq!(a, b, "text {i}"),
        }
    }
    // "<s> a" predicts one token; "" is "<s>" alone and predicts nothing.
    assert_eq!(together[1].unwrap().tokens, 1);
    assert_eq!(together[3], None);
    assert_eq!(together[0].unwrap().tokens, 6);
}

#[test]
fn later_tokens_do_not_change_earlier_states() {
    let dir = tempfile::tempdir().unwrap();
    testing::write_llama(dir.path(), 4).unwrap();
    let lm = LanguageModel::load(dir.path(), 64, &Device::Cpu).unwrap();
    let short = Tensor::new(&[[2u32, 5, 6, 7]], &Device::Cpu).unwrap();
    let long = Tensor::new(&[[2u32, 5, 6, 7, 8, 9, 10]], &Device::Cpu).unwrap();
    let a = lm.model.forward(&short).unwrap();
    let b = lm.model.forward(&long).unwrap().narrow(1, 0, 4).unwrap();
    let diff = delt_models::testing::max_abs_diff(&a, &b).unwrap();
    assert!(diff < 1e-5, "causal mask leaks: {diff}");
}

#[test]
fn an_uninformed_model_has_perplexity_equal_to_its_vocabulary() {
    let dir = tempfile::tempdir().unwrap();
    testing::write_llama(dir.path(), 2).unwrap();
    // A zero output projection gives uniform predictions: NLL = ln(vocab) for every token.
    let path = dir.path().join("model.safetensors");
    let mut tensors: HashMap<String, Tensor> =
        candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    let vocab = 3 + WORDS.len();
    tensors.insert(
        "lm_head.weight".into(),
        Tensor::zeros((vocab, 32), DType::F32, &Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&tensors, &path).unwrap();
    let lm = LanguageModel::load(dir.path(), 64, &Device::Cpu).unwrap();
    let loss = lm.token_losses(&[TEXTS[2]], 4).unwrap()[0].unwrap();
    assert!(
        (loss.mean() - (vocab as f64).ln()).abs() < 1e-5,
        "{}",
        loss.mean()
    );
    assert!((loss.perplexity() - vocab as f64).abs() < 1e-3);
}

#[test]
fn truncation_and_long_documents() {
    let dir = tempfile::tempdir().unwrap();
    testing::write_llama(dir.path(), 3).unwrap();
    let lm = LanguageModel::load(dir.path(), 16, &Device::Cpu).unwrap();
    let long = "the data ".repeat(200_000);
    let loss = lm.token_losses(&[&long], 4).unwrap()[0].unwrap();
    assert_eq!(loss.tokens, 15, "16 tokens: <s> and 15 predicted");
    let e = LanguageModel::load(dir.path(), 129, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("exceeds the model's 128 positions"), "{e}");
}

#[test]
fn bad_models_are_named() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("lm");
    testing::write_llama(&dir, 1).unwrap();
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let mut v: Value = serde_json::from_str(&config).unwrap();
    v["rope_scaling"] = serde_json::json!({"type": "linear", "factor": 2.0});
    std::fs::write(dir.join("config.json"), v.to_string()).unwrap();
    let e = LanguageModel::load(&dir, 32, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("config.json") && e.contains("rope_scaling"),
        "{e}"
    );

    std::fs::write(
        dir.join("config.json"),
        config.replace("\"llama\"", "\"mistral\""),
    )
    .unwrap();
    let e = LanguageModel::load(&dir, 32, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("mistral"), "{e}");

    std::fs::write(dir.join("config.json"), &config).unwrap();
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let e = LanguageModel::load(&dir, 32, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("safetensors"), "{e}");

    let fake = root.path().join("fake.gguf");
    std::fs::write(&fake, b"this is not a gguf file at all").unwrap();
    let e = LanguageModel::load(&fake, 32, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("fake.gguf") && e.contains("GGUF"), "{e}");

    let e = LanguageModel::load(&root.path().join("nope"), 32, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("no such file"), "{e}");
}

#[test]
fn smollm2_gguf_matches_transformers() {
    let Some(path) = testing::real_model("SmolLM2-135M-Instruct.Q4_1.gguf") else {
        return;
    };
    let r = &testing::reference("smollm2");
    let text = r["text"].as_str().unwrap();
    let lm = LanguageModel::load_with(&path, 512, Quantized::Dequantize, &Device::Cpu).unwrap();
    let ids = lm.tokenizer.encode(&[text]).unwrap();
    let want_ids: Vec<u32> = serde_json::from_value(r["token_ids"].clone()).unwrap();
    assert_eq!(ids[0], want_ids, "tokenization differs from transformers'");
    let want = r["mean_nll"].as_f64().unwrap();
    // Dequantized weights: the same float32 arithmetic as transformers.
    let exact = lm.token_losses(&[text], 4).unwrap()[0].unwrap();
    assert_eq!(exact.tokens, want_ids.len() - 1);
    // Kept quantized: 8-bit activations times Q4_1 weights, as llama.cpp does.
    let lm = LanguageModel::load_with(&path, 512, Quantized::Keep, &Device::Cpu).unwrap();
    let fast = lm.token_losses(&[text], 4).unwrap()[0].unwrap();
    eprintln!(
        "SmolLM2 mean NLL: transformers {want:.5}, delt dequantized {:.5}, delt quantized {:.5} (perplexity {:.3})",
        exact.mean(),
        fast.mean(),
        fast.perplexity()
    );
    assert!(
        (exact.mean() - want).abs() < 1e-4,
        "mean NLL {} vs {want}",
        exact.mean()
    );
    assert!(
        (fast.mean() - want).abs() < 0.01 * want,
        "mean NLL {} vs {want}",
        fast.mean()
    );
}

#[test]
fn auto_dequantizes_on_the_cpu_when_the_float_weights_fit() {
    let cpu = &Device::Cpu;
    let gb = 1_000_000_000;
    let (path, why) = Quantized::Auto.resolve(gb / 2, Some(24 * gb), cpu);
    assert_eq!(path, Quantized::Dequantize);
    assert!(
        why.contains("0.50 GB of float32 weights") && why.contains("dequantize=false"),
        "{why}"
    );
    let (path, why) = Quantized::Auto.resolve(3 * gb, Some(5 * gb), cpu);
    assert_eq!(path, Quantized::Keep, "3 GB is more than half of 5 GB");
    assert!(why.contains("dequantize=true forces float32"), "{why}");
    assert_eq!(Quantized::Auto.resolve(1, None, cpu).0, Quantized::Keep);
    // An explicit choice is kept whatever the memory.
    assert_eq!(
        Quantized::Dequantize.resolve(3 * gb, Some(gb), cpu).0,
        Quantized::Dequantize
    );
    assert_eq!(
        Quantized::Keep.resolve(1, Some(24 * gb), cpu).0,
        Quantized::Keep
    );
    assert!(delt_models::llama::available_memory().is_some_and(|b| b > 0));
}

#[test]
fn smollm2_quantized_and_float_paths_agree_per_document() {
    let Some(path) = testing::real_model("SmolLM2-135M-Instruct.Q4_1.gguf") else {
        return;
    };
    let texts = [
        "The quick brown fox jumps over the lazy dog while the farmer watches from the porch.",
        "In 1905 Albert Einstein published four papers that changed physics: on the photoelectric effect, Brownian motion, special relativity and the equivalence of mass and energy.",
        "def add(a, b):\n    return a + b\n\nprint(add(2, 3))",
        "Shares fell sharply on Tuesday after the central bank raised interest rates by half a point, its third increase this year.",
    ];
    let load = |q| LanguageModel::load_with(&path, 128, q, &Device::Cpu).unwrap();
    let (float, quantized) = (load(Quantized::Dequantize), load(Quantized::Keep));
    assert!(
        float.weights.contains("dequantized to float32"),
        "{}",
        float.weights
    );
    assert!(
        quantized.weights.contains("kept quantized"),
        "{}",
        quantized.weights
    );
    let a = float.token_losses(&texts, 4).unwrap();
    let b = quantized.token_losses(&texts, 4).unwrap();
    let mut total = 0.0;
    for (i, (a, b)) in a.iter().zip(&b).enumerate() {
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(a.tokens, b.tokens);
        eprintln!("text {i}: float {:.5}, quantized {:.5}", a.mean(), b.mean());
        // Q8 activations make the quantized product sensitive to the last bit of its input (a
        // 2e-7 change of a norm's output moves a projection's by 6e-3), so on texts of 20 to 40
        // tokens the two paths differ by noise of a few hundredths of a nat (0.006 to 0.047
        // here; composed candle ops give 0.0005 to 0.026 on the same texts).
        assert!(
            (a.mean() - b.mean()).abs() < 0.06,
            "text {i}: float {} vs quantized {}",
            a.mean(),
            b.mean()
        );
        total += (a.mean() - b.mean()).abs();
    }
    assert!(total / 4.0 < 0.025, "mean difference {}", total / 4.0);
}
/// Texts of 1 to 30 words from the tiny models' vocabulary.
fn many_texts(count: usize) -> Vec<String> {
    (0..count)
        .map(|i| {
            (0..1 + (i * 7) % 30)
                .map(|j| WORDS[(i * 11 + j * 5) % WORDS.len()])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

#[test]
fn smollm2_scores_are_identical_whatever_the_batch_size_and_threads() {
    // The real model: a tiny one is so narrow that gemm picks its small-matrix kernels, whose
    // sums group differently, by the shape of each batch.
    let Some(path) = testing::real_model("SmolLM2-135M-Instruct.Q4_1.gguf") else {
        return;
    };
    let lm = LanguageModel::load(&path, 64, &Device::Cpu).unwrap();
    let texts = many_texts(40);
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let bits = |batch: usize, threads: usize| -> Vec<Option<(u64, usize)>> {
        testing::on_threads(threads, || lm.token_losses(&refs, batch))
            .unwrap()
            .into_iter()
            .map(|l| l.map(|l| (l.nll.to_bits(), l.tokens)))
            .collect()
    };
    // Batches of 1 and 3 make several pipeline chunks (8 batches each) of the 40 texts.
    let want = bits(1, 1);
    assert!(want.iter().flatten().count() >= 35, "{want:?}");
    for (batch, threads) in [(3, 2), (8, 1), (64, 2)] {
        assert_eq!(
            bits(batch, threads),
            want,
            "batch {batch}, {threads} threads"
        );
    }
}
