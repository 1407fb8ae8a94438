//! BERT encoder and LQS scorer: tiny random models for the mechanics, the real MiniLM against
//! reference values from PyTorch (tests/fixtures/models/reference.json).

use std::path::Path;

use candle_core::{Device, Tensor};
use delt_models::bert::{BertEncoder, TextEncoder};
use delt_models::lqs::{self, LqsScorer, ScorerConfig};
use delt_models::testing::{self, SAMPLE_TEXTS as TEXTS};
use serde_json::Value;

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    testing::max_abs_diff(a, b).unwrap()
}

#[test]
fn batched_embeddings_equal_one_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    testing::write_bert(dir.path(), 7).unwrap();
    let encoder = TextEncoder::load(dir.path(), 64, &Device::Cpu).unwrap();
    let together = encoder.embed(&TEXTS, 8).unwrap();
    assert_eq!(together.dims(), [5, 32]);
    for (i, text) in TEXTS.iter().enumerate() {
        let alone = encoder.embed(&[text], 1).unwrap();
        let diff = max_abs_diff(&alone.get(0).unwrap(), &together.get(i).unwrap());
        assert!(
            diff < 1e-5,
            "text {i}: padding changed the embedding by {diff}"
        );
    }
    // Different texts, different embeddings (the encoder is not constant).
    assert!(max_abs_diff(&together.get(0).unwrap(), &together.get(2).unwrap()) > 1e-2);
}

#[test]
fn fused_cpu_kernels_equal_candle_ops() {
    let dir = tempfile::tempdir().unwrap();
    testing::write_bert(dir.path(), 11).unwrap();
    let mut encoder = BertEncoder::load(dir.path(), &Device::Cpu).unwrap();
    // Padded and unpadded batches: hidden states at every position, padding included.
    let batches: [&[&[u32]]; 2] = [
        &[&[2, 10, 3], &[2, 11, 12, 13, 14, 3], &[2, 3]],
        &[&[2, 15, 16, 3], &[2, 17, 18, 3]],
    ];
    for seqs in batches {
        let (ids, mask) = delt_models::bert::pad(seqs, 0, &Device::Cpu).unwrap();
        encoder.use_fused_kernels(true);
        let fused = encoder.forward(&ids, &mask).unwrap();
        encoder.use_fused_kernels(false);
        let composed = encoder.forward(&ids, &mask).unwrap();
        let diff = max_abs_diff(&fused, &composed);
        assert!(diff < 1e-5, "fused and composed differ by {diff}");
    }
    // An empty batch is an empty result on both paths.
    for fused in [true, false] {
        encoder.use_fused_kernels(fused);
        assert_eq!(encoder.embed(&[]).unwrap().dims(), [0, 32]);
    }
}

#[test]
fn mean_pooling_averages_real_tokens_only() {
    let dir = tempfile::tempdir().unwrap();
    testing::write_bert(dir.path(), 3).unwrap();
    let encoder = BertEncoder::load(dir.path(), &Device::Cpu).unwrap();
    let (short, long): (&[u32], &[u32]) = (&[2, 10, 3], &[2, 11, 12, 13, 14, 3]);
    let pooled = encoder.embed(&[short, long]).unwrap();
    // The short sequence's mean, computed by hand from its own unpadded hidden states.
    let ids = Tensor::new(short, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let mask = Tensor::ones((1, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
    let hidden = encoder.forward(&ids, &mask).unwrap();
    let by_hand = hidden.get(0).unwrap().mean(0).unwrap();
    assert!(max_abs_diff(&by_hand, &pooled.get(0).unwrap()) < 1e-5);
}

#[test]
fn truncation_keeps_the_first_tokens() {
    let dir = tempfile::tempdir().unwrap();
    testing::write_bert(dir.path(), 5).unwrap();
    let encoder = TextEncoder::load(dir.path(), 8, &Device::Cpu).unwrap();
    let long = "the data ".repeat(100_000);
    let ids = encoder.tokenizer.encode(&[&long, "the data the"]).unwrap();
    assert_eq!(ids[0].len(), 8);
    let short = encoder
        .tokenizer
        .encode(&["the data the data the data"])
        .unwrap();
    assert_eq!(ids[0], short[0], "[CLS] + first 6 words + [SEP]");
    let e = TextEncoder::load(dir.path(), 65, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("exceeds the 64 positions"), "{e}");
}

fn write_scorer(dir: &Path, encoder: &Path, weight: &[f32], bias: f32) {
    let config = ScorerConfig {
        format: lqs::FORMAT.into(),
        version: lqs::VERSION,
        encoder: encoder.to_str().unwrap().into(),
        encoder_fingerprint: lqs::encoder_fingerprint(encoder).unwrap(),
        head: "head.safetensors".into(),
        hidden_size: weight.len(),
        max_tokens: 64,
        pooling: "mean".into(),
        training: Value::Null,
    };
    lqs::save(dir, &config, weight, bias).unwrap();
}

#[test]
fn scorer_is_head_over_pooled_embedding() {
    let root = tempfile::tempdir().unwrap();
    let (encoder_dir, scorer_dir) = (root.path().join("enc"), root.path().join("scorer"));
    testing::write_bert(&encoder_dir, 11).unwrap();
    let weight: Vec<f32> = (0..32).map(|i| (i as f32 - 16.0) / 10.0).collect();
    write_scorer(&scorer_dir, &encoder_dir, &weight, 0.25);
    let scorer = LqsScorer::load(&scorer_dir, None, &Device::Cpu).unwrap();
    let scores = scorer.score(&TEXTS, 2).unwrap();
    let embeddings = scorer
        .encoder()
        .embed(&TEXTS, 8)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    for (s, e) in scores.iter().zip(&embeddings) {
        let by_hand: f32 = e.iter().zip(&weight).map(|(x, w)| x * w).sum::<f32>() + 0.25;
        assert!((s - by_hand).abs() < 1e-4, "{s} vs {by_hand}");
    }
    assert!(scorer.score(&[], 2).unwrap().is_empty());
}

#[test]
fn scorer_refuses_another_encoder_and_bad_heads() {
    let root = tempfile::tempdir().unwrap();
    let (a, b) = (root.path().join("a"), root.path().join("b"));
    testing::write_bert(&a, 1).unwrap();
    testing::write_bert(&b, 2).unwrap();
    // Same config, weights of another size: a different encoder.
    std::fs::write(
        b.join("model.safetensors"),
        [
            std::fs::read(b.join("model.safetensors")).unwrap(),
            vec![0; 8],
        ]
        .concat(),
    )
    .unwrap();
    let scorer_dir = root.path().join("s");
    write_scorer(&scorer_dir, &a, &[0.0; 32], 0.0);
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(scorer_dir.join("scorer.json")).unwrap())
            .unwrap();
    config["encoder"] = Value::String(b.to_str().unwrap().into());
    std::fs::write(scorer_dir.join("scorer.json"), config.to_string()).unwrap();
    let e = LqsScorer::load(&scorer_dir, None, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("fitted on another encoder"), "{e}");

    let head = root.path().join("head.safetensors");
    let tensors = [
        (
            "weight".to_string(),
            Tensor::zeros((1, 16), candle_core::DType::F32, &Device::Cpu).unwrap(),
        ),
        (
            "bias".to_string(),
            Tensor::zeros(1, candle_core::DType::F32, &Device::Cpu).unwrap(),
        ),
    ];
    candle_core::safetensors::save(&tensors.into_iter().collect(), &head).unwrap();
    let e = LqsScorer::from_parts(&a, &head, 64, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("[1, 16]") && e.contains("32 dimensions"), "{e}");
}

#[test]
fn missing_files_and_unsupported_configs_are_named() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("m");
    testing::write_bert(&dir, 1).unwrap();
    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    let e = TextEncoder::load(&dir, 32, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("tokenizer.json") && e.contains("missing"), "{e}");

    testing::write_bert(&dir, 1).unwrap();
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
    std::fs::write(
        dir.join("config.json"),
        config.replace("\"bert\"", "\"roberta\""),
    )
    .unwrap();
    let e = TextEncoder::load(&dir, 32, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("config.json") && e.contains("roberta"), "{e}");

    std::fs::write(
        dir.join("config.json"),
        config.replace("\"gelu\"", "\"swish\""),
    )
    .unwrap();
    let e = TextEncoder::load(&dir, 32, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("swish"), "{e}");
}

#[test]
fn minilm_matches_pytorch() {
    let Some(dir) = testing::real_model("all-MiniLM-L6-v2") else {
        return;
    };
    let r = &testing::reference("minilm");
    let sentences: Vec<&str> = r["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    let encoder = TextEncoder::load(&dir, 256, &Device::Cpu).unwrap();
    let ids = encoder.tokenizer.encode(&sentences).unwrap();
    let want_ids: Vec<Vec<u32>> = serde_json::from_value(r["token_ids"].clone()).unwrap();
    assert_eq!(ids, want_ids);
    let got = encoder
        .embed(&sentences, 4)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let want: Vec<Vec<f64>> = serde_json::from_value(r["embeddings"].clone()).unwrap();
    let mut worst = 0f64;
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.len(), 384);
        for (a, b) in g.iter().zip(w) {
            worst = worst.max((f64::from(*a) - b).abs());
        }
    }
    eprintln!("MiniLM max abs difference vs PyTorch: {worst:.2e}");
    assert!(worst < 1e-4, "max abs difference {worst}");
}
#[test]
fn minilm_embeddings_are_identical_whatever_the_batch_size_and_threads() {
    // The real model: a tiny one is so narrow that gemm picks its small-matrix kernels, whose
    // sums group differently, by the shape of each batch.
    let Some(dir) = testing::real_model("all-MiniLM-L6-v2") else {
        return;
    };
    let encoder = TextEncoder::load(&dir, 48, &Device::Cpu).unwrap();
    // 1 to 40 words: more than one pipeline chunk at small batch sizes.
    let texts: Vec<String> = (0..90)
        .map(|i| {
            (0..1 + (i * 7) % 40)
                .map(|j| testing::WORDS[(i * 11 + j * 5) % testing::WORDS.len()])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let bits = |batch: usize, threads: usize| -> Vec<u32> {
        let e = testing::on_threads(threads, || encoder.embed(&refs, batch)).unwrap();
        assert_eq!(e.dims(), [90, 384]);
        testing::f32_bits(&e).unwrap()
    };
    let want = bits(1, 1);
    for (batch, threads) in [(3, 1), (8, 2), (32, 3), (200, 2)] {
        assert_eq!(
            bits(batch, threads),
            want,
            "batch {batch}, {threads} threads"
        );
    }
}
