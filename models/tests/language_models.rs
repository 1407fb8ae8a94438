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
    // Quantized (the default): 8-bit activations times Q4_1 weights, as llama.cpp does.
    let lm = LanguageModel::load(&path, 512, &Device::Cpu).unwrap();
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
